"""Joint augmentation of image, boxes and mask with torchvision.transforms.v2.

Training pipeline (SSD-style, Liu et al. 2016; the colour distortion is the augmentation of
Martí & Maki 2017's aerial setting):

1. ``RandomPhotometricDistort`` (brightness, contrast, saturation, hue, channel order),
2. ``RandomZoomOut`` (image filled with the mean colour, mask with 255 = ignore),
3. crop: ``RandomIoUCrop`` for samples with at least one box; samples with no boxes
   (segmentation-only, or detection-labelled but empty) get ``RandomResizedCrop`` instead,
   because the IoU crop needs boxes,
4. ``RandomHorizontalFlip`` (and optionally ``RandomVerticalFlip``, natural for nadir imagery),
5. ``Resize`` to the model input size (masks use nearest neighbour),
6. ``SanitizeBoundingBoxes`` (labels and ``difficult`` filtered with the boxes).

Evaluation pipeline: ``Resize`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

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
        fill_mean: RGB uint8 fill of zoomed-out borders.
        min_box_size: boxes smaller than this (pixels, after resize) are removed.
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
    fill_mean: tuple[int, int, int] = IMAGENET_MEAN_UINT8
    min_box_size: float = 1.0

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (H, W) of positive ints, got {self.input_size}")
        for name in ("photometric_p", "zoom_out_p", "crop_p", "hflip_p", "vflip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.zoom_out_max_scale < 1.0:
            raise ValueError(f"zoom_out_max_scale must be >= 1, got {self.zoom_out_max_scale}")


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
    resize = v2.Resize(cfg.input_size, antialias=True)
    if not train:
        return JointTransform([], None, None, [resize], None)
    steps: list[torch.nn.Module] = []
    if cfg.photometric:
        steps.append(v2.RandomPhotometricDistort(
            brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation, hue=cfg.hue,
            p=cfg.photometric_p,
        ))
    if cfg.zoom_out:
        steps.append(v2.RandomZoomOut(
            fill={tv_tensors.Image: cfg.fill_mean, tv_tensors.Mask: IGNORE_INDEX, "others": 0},
            side_range=(1.0, cfg.zoom_out_max_scale),
            p=cfg.zoom_out_p,
        ))
    box_crop = plain_crop = None
    if cfg.crop:
        box_crop = v2.RandomApply([v2.RandomIoUCrop(min_scale=cfg.crop_min_scale)], p=cfg.crop_p)
        plain_crop = v2.RandomApply(
            [v2.RandomResizedCrop(cfg.input_size, scale=(cfg.crop_min_scale**2, 1.0), ratio=(0.5, 2.0), antialias=True)],
            p=cfg.crop_p,
        )
    finish: list[torch.nn.Module] = []
    if cfg.hflip:
        finish.append(v2.RandomHorizontalFlip(cfg.hflip_p))
    if cfg.vflip:
        finish.append(v2.RandomVerticalFlip(cfg.vflip_p))
    finish.append(resize)
    sanitize = v2.SanitizeBoundingBoxes(min_size=cfg.min_box_size, labels_getter=_labels_and_flags)
    return JointTransform(steps, box_crop, plain_crop, finish, sanitize)
