"""Joint augmentation of image, boxes and mask with torchvision.transforms.v2.

Training pipeline (SSD-style, Liu et al. 2016; the colour distortion is the augmentation of
Martí & Maki 2017's aerial setting):

1. ``RandomPhotometricDistort`` (brightness, contrast, saturation, hue, channel order),
2. ``RandomZoomOut`` (image filled with the mean colour, mask with 255 = ignore),
3. crop: ``RandomIoUCrop`` for samples with at least one box; samples with no boxes
   (segmentation-only, or detection-labelled but empty) get ``RandomResizedCrop`` instead,
   because the IoU crop needs boxes,
4. ``RandomHorizontalFlip`` (and optionally ``RandomVerticalFlip``, natural for nadir imagery),
5. fit to the model input size as the model's ``resize`` says (masks use nearest neighbour):
   ``stretch`` resizes each axis (``Resize``); ``letterbox`` keeps the aspect ratio and pads
   (:class:`Letterbox`, the geometry of :mod:`mtl_perception.letterbox` that the
   :class:`~mtl_perception.predictor.Predictor` inverts). With ``letterbox``, samples without
   boxes get :class:`RandomAreaCrop` (a crop that is not resized) instead of
   ``RandomResizedCrop``, so the network never sees a frame distorted;
6. ``SanitizeBoundingBoxes`` (labels and ``difficult`` filtered with the boxes).

Evaluation pipeline: the fit to the input size only.

Other masks in the target (``ignore_mask``: 1 inside regions whose anchors the SSD matcher
ignores) follow the image like ``mask``; zoom-out and letterbox padding fill them with 255,
which means "not an ignored region" there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..letterbox import RESIZE_MODES, resize_geometry
from .base import IGNORE_INDEX, Sample

IMAGENET_MEAN_UINT8 = (124, 116, 104)


@dataclass
class AugmentationConfig:
    """Which augmentations run, and how.

    Attributes:
        input_size: (H, W) the model sees.
        photometric / photometric_p: colour distortion on, and the chance of each of its steps.
        brightness, contrast, saturation, hue: ranges of the colour distortion.
        zoom_out / zoom_out_p / zoom_out_max_scale: SSD "expand" on, its chance, largest canvas factor.
        crop / crop_p: random crop on, and its chance (the IoU crop also keeps the image
            uncropped with probability 1/7 by design).
        crop_min_scale: smallest crop side as a fraction of the image side.
        hflip / hflip_p, vflip / vflip_p: flips.
        grayscale_p: chance of turning the image to grey (3 equal channels), e.g. so that a
            detector trained on colour tiles has seen the grey imagery it may meet.
        rot90: rotate by a random multiple of 90 degrees (k = 0..3, each 1/4); with the
            flips this covers the 8 symmetries of nadir imagery, which has no "up".
        fill_mean: RGB uint8 fill of zoomed-out borders and letterbox padding.
        min_box_size: boxes smaller than this (pixels, after resize) are removed.
        resize: ``stretch`` or ``letterbox``: how the sample is fitted to ``input_size``
            (always the model's ``resize``; the training config sets it from there).
    """

    input_size: tuple[int, int] = (300, 300)
    photometric: bool = True
    photometric_p: float = 0.5
    brightness: tuple[float, float] = (0.875, 1.125)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.05, 0.05)
    zoom_out: bool = True
    zoom_out_p: float = 0.5
    zoom_out_max_scale: float = 4.0
    crop: bool = True
    crop_p: float = 1.0
    crop_min_scale: float = 0.3
    hflip: bool = True
    hflip_p: float = 0.5
    vflip: bool = False
    vflip_p: float = 0.5
    rot90: bool = False
    grayscale_p: float = 0.0
    fill_mean: tuple[int, int, int] = IMAGENET_MEAN_UINT8
    min_box_size: float = 1.0
    resize: str = "stretch"

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (H, W) of positive ints, got {self.input_size}")
        for name in ("photometric_p", "zoom_out_p", "crop_p", "hflip_p", "vflip_p", "grayscale_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.zoom_out_max_scale < 1.0:
            raise ValueError(f"zoom_out_max_scale must be >= 1, got {self.zoom_out_max_scale}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")


def _first_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for item in flat_inputs:
        if isinstance(item, (tv_tensors.Image, tv_tensors.Mask)):
            return tuple(F.get_size(item))  # type: ignore[return-value]
    raise TypeError("the sample holds no image")


def _fill_for(inpt: Any, image_fill: Sequence[int]) -> Any:
    if isinstance(inpt, tv_tensors.Image):
        return list(image_fill)
    return IGNORE_INDEX if isinstance(inpt, tv_tensors.Mask) else 0


class Letterbox(v2.Transform):
    """Fit a sample to ``size`` keeping its aspect ratio: resize by one factor, pad the rest.

    The placement is :func:`mtl_perception.letterbox.resize_geometry` (``letterbox``), so
    boxes land where the Predictor's inverse expects them: original ``x`` becomes
    ``x * scale_x + pad_left``. Images are padded with ``fill`` (RGB uint8), masks with 255.

    Args:
        size: (H, W) of the model input.
        fill: RGB uint8 padding colour of images.
    """

    def __init__(self, size: Sequence[int], fill: Sequence[int] = IMAGENET_MEAN_UINT8) -> None:
        super().__init__()
        self.size = tuple(int(v) for v in size)
        self.fill = tuple(int(v) for v in fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"geometry": resize_geometry(_first_size(flat_inputs), self.size, "letterbox")}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        geometry = params["geometry"]
        out = inpt
        if geometry.content_size != geometry.src_size:
            out = F.resize(out, list(geometry.content_size), antialias=True)
        bottom = geometry.dst_size[0] - geometry.content_size[0] - geometry.pad_top
        right = geometry.dst_size[1] - geometry.content_size[1] - geometry.pad_left
        if geometry.pad_top or geometry.pad_left or bottom or right:
            out = F.pad(out, [geometry.pad_left, geometry.pad_top, right, bottom], fill=_fill_for(inpt, self.fill))
        return out


class RandomAreaCrop(v2.Transform):
    """Crop a random window (area ``scale`` of the image, aspect ratio in ``ratio``) without
    resizing it: ``RandomResizedCrop``'s window for pipelines that fit the size afterwards
    (letterbox), where resizing the window to a fixed shape would distort the frame."""

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (0.75, 4 / 3)) -> None:
        super().__init__()
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _first_size(flat_inputs)
        area = height * width * float(torch.empty(1).uniform_(*self.scale))
        aspect = math.exp(float(torch.empty(1).uniform_(*self.log_ratio)))
        crop_w = min(width, max(1, round(math.sqrt(area * aspect))))
        crop_h = min(height, max(1, round(math.sqrt(area / aspect))))
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, **params)


class RandomRot90(v2.Transform):
    """Rotate image, boxes and masks counter-clockwise by ``90 * k`` degrees, ``k`` uniform in
    0..3 (``F.rotate`` with ``expand``: exact for multiples of 90, a W x H frame becomes H x W)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": 90.0 * int(torch.randint(0, 4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["angle"] == 0.0:
            return inpt
        return F.rotate(inpt, params["angle"], expand=True)


def fit_to_input(cfg: "AugmentationConfig") -> torch.nn.Module:
    """The last geometric step: ``Resize`` (stretch) or :class:`Letterbox` to ``cfg.input_size``."""
    if cfg.resize == "letterbox":
        return Letterbox(cfg.input_size, cfg.fill_mean)
    return v2.Resize(cfg.input_size, antialias=True)


def _labels_and_flags(inputs: Any) -> tuple[torch.Tensor, ...]:
    target = inputs[1]
    return tuple(target[key] for key in ("labels", "difficult") if key in target)


def _has_boxes(target: dict) -> bool:
    return "boxes" in target and len(target["boxes"]) > 0


class JointTransform(torch.nn.Module):
    """Apply v2 transforms to ``(image, target)`` choosing, per sample, the ops its labels allow.

    Args:
        steps: transforms applied to every sample, in order, before the crop.
        box_crop: crop for samples with boxes (``RandomIoUCrop``), or None.
        plain_crop: crop for samples without boxes, or None.
        finish: transforms applied after the crop to every sample (flips, resize).
        sanitize: ``SanitizeBoundingBoxes``, applied when the sample carries boxes.
    """

    def __init__(
        self,
        steps: list[torch.nn.Module],
        box_crop: torch.nn.Module | None,
        plain_crop: torch.nn.Module | None,
        finish: list[torch.nn.Module],
        sanitize: torch.nn.Module | None,
    ) -> None:
        super().__init__()
        self.steps = v2.Compose(steps) if steps else None
        self.box_crop = box_crop
        self.plain_crop = plain_crop
        self.finish = v2.Compose(finish) if finish else None
        self.sanitize = sanitize

    def forward(self, image: tv_tensors.Image, target: dict) -> Sample:
        if self.steps is not None:
            image, target = self.steps(image, target)
        crop = self.box_crop if _has_boxes(target) else self.plain_crop
        if crop is not None:
            image, target = crop(image, target)
        if self.finish is not None:
            image, target = self.finish(image, target)
        if self.sanitize is not None and "boxes" in target:
            image, target = self.sanitize(image, target)
        return image, target


def build_transforms(cfg: AugmentationConfig | None = None, train: bool = True) -> JointTransform:
    """The training (``train=True``) or evaluation (resize only) joint transform of ``cfg``."""
    cfg = cfg or AugmentationConfig()
    resize = fit_to_input(cfg)
    if not train:
        return JointTransform([], None, None, [resize], None)
    steps: list[torch.nn.Module] = []
    if cfg.photometric:
        steps.append(v2.RandomPhotometricDistort(
            brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue,
            p=cfg.photometric_p,
        ))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    if cfg.zoom_out:
        steps.append(v2.RandomZoomOut(
            fill={tv_tensors.Image: cfg.fill_mean, tv_tensors.Mask: IGNORE_INDEX, "others": 0},
            side_range=(1.0, cfg.zoom_out_max_scale),
            p=cfg.zoom_out_p,
        ))
    box_crop = plain_crop = None
    if cfg.crop:
        box_crop = v2.RandomApply([v2.RandomIoUCrop(min_scale=cfg.crop_min_scale)], p=cfg.crop_p)
        area_scale, ratio = (cfg.crop_min_scale**2, 1.0), (0.5, 2.0)
        plain_crop = v2.RandomApply(
            [RandomAreaCrop(area_scale, ratio) if cfg.resize == "letterbox"
             else v2.RandomResizedCrop(cfg.input_size, scale=area_scale, ratio=ratio, antialias=True)],
            p=cfg.crop_p,
        )
    finish: list[torch.nn.Module] = []
    if cfg.hflip:
        finish.append(v2.RandomHorizontalFlip(cfg.hflip_p))
    if cfg.vflip:
        finish.append(v2.RandomVerticalFlip(cfg.vflip_p))
    if cfg.rot90:
        finish.append(RandomRot90())
    finish.append(resize)
    sanitize = v2.SanitizeBoundingBoxes(min_size=cfg.min_box_size, labels_getter=_labels_and_flags)
    return JointTransform(steps, box_crop, plain_crop, finish, sanitize)
