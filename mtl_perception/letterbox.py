"""Geometry of fitting a frame to the network's input size: ``stretch`` or ``letterbox``.

``stretch`` resizes each axis independently to the input size (a 16:9 frame is squashed
into a square). ``letterbox`` scales both axes by the same factor so the whole frame
fits, and pads the rest of the input with one fill value; the frame's aspect ratio is
kept. Training, the :class:`~mtl_perception.predictor.Predictor`, the exporter and the
nodes all map between original and input pixels with these functions, so what the
network learned is what it is shown.

Coordinates are continuous pixel coordinates (a pixel's left edge is ``x``, its right edge
``x + 1``), the convention of XYXY boxes and of bilinear resizing with
``align_corners=False``: original ``x`` maps to input ``x * scale_x + pad_left``.

Everything here works on torch tensors and numpy arrays alike, except the two resizing
functions, which take tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.nn.functional as F

RESIZE_MODES = ("stretch", "letterbox")

Boxes = TypeVar("Boxes")  # torch.Tensor or np.ndarray, [..., 4] XYXY


@dataclass(frozen=True)
class ResizeGeometry:
    """How one frame of ``src_size`` sits in an input of ``dst_size`` (both (H, W)).

    The frame, resized to ``content_size``, occupies rows ``pad_top .. pad_top + content_h``
    and columns ``pad_left .. pad_left + content_w`` of the input; the rest is padding
    (none for ``stretch``). ``scale_y``/``scale_x`` are input pixels per original pixel,
    exactly ``content / src`` on each axis.
    """

    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    content_size: tuple[int, int]
    pad_top: int
    pad_left: int

    @property
    def scale_y(self) -> float:
        return self.content_size[0] / self.src_size[0]

    @property
    def scale_x(self) -> float:
        return self.content_size[1] / self.src_size[1]

    @property
    def is_identity(self) -> bool:
        return self.src_size == self.dst_size

    @property
    def content_slices(self) -> tuple[slice, slice]:
        """(rows, columns) of the input that hold the frame."""
        return (slice(self.pad_top, self.pad_top + self.content_size[0]),
                slice(self.pad_left, self.pad_left + self.content_size[1]))


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


def resize_geometry(src_size: Sequence[int], dst_size: Sequence[int], mode: str = "stretch") -> ResizeGeometry:
    """Placement of a ``src_size`` frame in a ``dst_size`` input (both (H, W)).

    ``letterbox`` scales by ``min(dst_h / src_h, dst_w / src_w)``, rounds the scaled
    size to whole pixels (at least 1) and centres it; odd padding puts the extra pixel
    at the bottom / right.
    """
    check_resize_mode(mode)
    src_h, src_w = (int(v) for v in src_size)
    dst_h, dst_w = (int(v) for v in dst_size)
    if min(src_h, src_w, dst_h, dst_w) < 1:
        raise ValueError(f"sizes must be positive, got source {(src_h, src_w)} and input {(dst_h, dst_w)}")
    if mode == "stretch":
        return ResizeGeometry((src_h, src_w), (dst_h, dst_w), (dst_h, dst_w), 0, 0)
    scale = min(dst_h / src_h, dst_w / src_w)
    content_h = min(dst_h, max(1, round(src_h * scale)))
    content_w = min(dst_w, max(1, round(src_w * scale)))
    return ResizeGeometry((src_h, src_w), (dst_h, dst_w), (content_h, content_w),
                          (dst_h - content_h) // 2, (dst_w - content_w) // 2)


def boxes_to_input(boxes: Boxes, geometry: ResizeGeometry) -> Boxes:
    """[..., 4] XYXY original pixels → input pixels (a new array/tensor)."""
    out = boxes * 1.0
    out[..., 0::2] = boxes[..., 0::2] * geometry.scale_x + geometry.pad_left
    out[..., 1::2] = boxes[..., 1::2] * geometry.scale_y + geometry.pad_top
    return out


def boxes_to_original(boxes: Boxes, geometry: ResizeGeometry, clip: bool = True) -> Boxes:
    """[..., 4] XYXY input pixels → original pixels (a new array/tensor).

    With ``clip`` the result is clipped to the frame (parts of a box over the padding are
    cut off).
    """
    out = boxes * 1.0
    out[..., 0::2] = (boxes[..., 0::2] - geometry.pad_left) / geometry.scale_x
    out[..., 1::2] = (boxes[..., 1::2] - geometry.pad_top) / geometry.scale_y
    if clip:
        out[..., 0::2] = out[..., 0::2].clip(0, geometry.src_size[1])
        out[..., 1::2] = out[..., 1::2].clip(0, geometry.src_size[0])
    return out


def pad_value(mean: Sequence[float]) -> tuple[int, int, int]:
    """The letterbox fill for a model normalised with ``mean`` (RGB in [0, 1]): the mean
    pixel in [0, 255], rounded, so padding is (almost) zero after normalisation."""
    return tuple(int(round(float(m) * 255.0)) for m in mean)  # type: ignore[return-value]


def resize_to_input(images: torch.Tensor, geometry: ResizeGeometry, fill: Sequence[float] | float = 0,
                    interpolation: str = "bilinear") -> torch.Tensor:
    """[B, C, H, W] frames of ``geometry.src_size`` → [B, C, *dst_size], padded with ``fill``.

    ``bilinear`` (antialiased, for images; float output) or ``nearest`` (for label masks;
    keeps the dtype). ``fill`` is one value or one per channel.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if tuple(images.shape[-2:]) != geometry.src_size:
        raise ValueError(f"images are {tuple(images.shape[-2:])}, geometry is for {geometry.src_size}")
    content = images
    if geometry.content_size != geometry.src_size:
        if interpolation == "bilinear":
            content = F.interpolate(images.float(), size=geometry.content_size, mode="bilinear",
                                    align_corners=False, antialias=True)
        else:
            content = F.interpolate(images.float(), size=geometry.content_size, mode="nearest-exact").to(images.dtype)
    elif interpolation == "bilinear":
        content = images.float()
    if geometry.content_size == geometry.dst_size:
        return content
    fill_tensor = torch.as_tensor(fill, dtype=content.dtype, device=content.device).reshape(1, -1, 1, 1)
    out = fill_tensor.expand(content.shape[0], content.shape[1], *geometry.dst_size).clone()
    rows, cols = geometry.content_slices
    out[..., rows, cols] = content
    return out


def resize_to_original(maps: torch.Tensor, geometry: ResizeGeometry) -> torch.Tensor:
    """[B, K, h, w] per-pixel maps (logits) over the input → [B, K, *src_size].

    Maps at the input size: crop the frame's region, then one bilinear resize
    (``align_corners=False``) to the original size. Without padding (``stretch``) the maps
    may have any resolution (e.g. the network's stride-16 scores): one resize straight to
    the original size.
    """
    if geometry.content_size == geometry.dst_size:
        if tuple(maps.shape[-2:]) == geometry.src_size:
            return maps
        return F.interpolate(maps, size=geometry.src_size, mode="bilinear", align_corners=False)
    if tuple(maps.shape[-2:]) != geometry.dst_size:
        raise ValueError(f"maps are {tuple(maps.shape[-2:])}: a letterboxed input needs them at the input size "
                         f"{geometry.dst_size}")
    rows, cols = geometry.content_slices
    content = maps[..., rows, cols]
    if geometry.content_size == geometry.src_size:
        return content
    return F.interpolate(content, size=geometry.src_size, mode="bilinear", align_corners=False)


__all__ = [
    "RESIZE_MODES", "ResizeGeometry", "boxes_to_input", "boxes_to_original", "check_resize_mode", "pad_value",
    "resize_geometry", "resize_to_input", "resize_to_original",
]
