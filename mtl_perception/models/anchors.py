"""Default boxes for the SSD branch (torchvision's ``DefaultBoxGenerator``) and the box coder
that expresses boxes as offsets against them (torchvision's ``BoxCoder``).

Both belong to the model, as in torchvision's SSD: the loss encodes targets with the
model's coder and the postprocess decodes with it.
"""

from __future__ import annotations

import math

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from .config import ModelConfig

STAGE_STRIDES = {"c3": 8, "c4": 16, "c5": 32}
# SSD's box-coder weights (variance 0.1 for centres, 0.2 for sizes).
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def box_coder() -> BoxCoder:
    """The SSD box coder: ``encode_single(boxes, anchors)`` gives [N, 4] offsets
    ``(10 dx / w_a, 10 dy / h_a, 5 log(w / w_a), 5 log(h / h_a))``; ``decode_single`` inverts it."""
    return BoxCoder(weights=BOX_CODER_WEIGHTS)


def halve(size: int, times: int) -> int:
    """A side after ``times`` stride-2 layers."""
    # Every stride-2 layer in the trunks and extras is a 3x3 (or 7x7) conv / pool with
    # padding k // 2, which maps n to ceil(n / 2).
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


def feature_sizes(config: ModelConfig, input_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """(H, W) of every SSD level, shallow to deep, for ``input_size`` (default: the config's)."""
    height, width = input_size or config.input_size
    sizes = []
    for stage in config.det_stages:
        halvings = int(math.log2(STAGE_STRIDES[stage]))
        sizes.append((halve(height, halvings), halve(width, halvings)))
    c5 = (halve(height, 5), halve(width, 5))
    for i in range(len(config.det_extra_channels)):
        sizes.append((halve(c5[0], i + 1), halve(c5[1], i + 1)))
    return sizes


class AnchorGenerator:
    """SSD default boxes for a config, cached per input size.

    ``anchors(input_size)`` returns [A, 4] boxes in XYXY input-pixel coordinates, in the
    order of the SSD head's outputs (level, then row-major cell, then box shape).
    """

    def __init__(self, config: ModelConfig):
        self.config = config
        self.generator = DefaultBoxGenerator(
            [list(r) for r in config.anchor_aspect_ratios],
            min_ratio=config.anchor_min_ratio,
            max_ratio=config.anchor_max_ratio,
        )
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def num_anchors_per_location(self) -> list[int]:
        return self.generator.num_anchors_per_location()

    def anchors(self, input_size: tuple[int, int] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        size = tuple(input_size or self.config.input_size)
        if size not in self._cache:
            image = torch.empty(1, 0, *size)
            maps = [torch.empty(1, 0, h, w) for h, w in feature_sizes(self.config, size)]
            self._cache[size] = self.generator(ImageList(image, [size]), maps)[0]
        return self._cache[size].to(device)
