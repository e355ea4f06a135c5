"""The multitask network and its single-task twins, built from the same parts.

Which trunk stage feeds which branch (see :mod:`.trunks` for strides):

* FCN segmentation: ``c5`` gives the class scores (deepest, most semantic), ``c4`` the
  skip connection that restores detail at stride 16 (the paper's "FCN with a skip").
* SSD detection: ``c3``, ``c4`` and ``c5`` are its three finest levels (small objects,
  which dominate drone imagery, need the stride-8 map), then extra stride-2 layers
  after ``c5`` give the coarse levels for large objects.

The trunk runs once per frame and both branches read its dict of feature maps; this
sharing is where the multitask model saves time, memory and size over two networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .anchors import STAGE_STRIDES, AnchorGenerator, box_coder, halve
from .config import ModelConfig
from .heads import FCNSkipHead, SSDBranch
from .trunks import Trunk

SEG_LOGITS = "seg_logits"  # [B, num_seg_classes, H_in, W_in]
BBOX_REGRESSION = "bbox_regression"  # [B, A, 4], box-coder offsets against the anchors
CLS_LOGITS = "cls_logits"  # [B, A, num_det_classes + 1], index 0 = background
OUTPUT_KEYS = (SEG_LOGITS, BBOX_REGRESSION, CLS_LOGITS)


class PerceptionNet(nn.Module):
    """Trunk plus the branches named in ``config.tasks``.

    Input: images [B, 3, H, W], RGB, float in [0, 255] or uint8 (normalisation is part
    of the network, so exported models take raw pixels). Output: a dict of raw head
    outputs under :data:`OUTPUT_KEYS` (only the keys of the present branches).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.trunk = Trunk(config.trunk, frozen_bn=config.trunk_norm == "frozen")
        channels = self.trunk.channels
        self.register_buffer("pixel_mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_non_persistent_buffers()
        self.anchor_generator = AnchorGenerator(config) if config.has_detection else None
        self.box_coder = box_coder() if config.has_detection else None
        self.seg_head = (
            FCNSkipHead(channels["c5"], {stage: channels[stage] for stage in config.seg_skips},
                        config.num_seg_classes, config.seg_head_channels, norm=config.head_norm)
            if config.has_segmentation else None
        )
        self.det_head = (
            SSDBranch(
                [channels[s] for s in config.det_stages],
                config.det_stages,
                channels["c5"],
                config.det_extra_channels,
                self.anchor_generator.num_anchors_per_location(),
                config.num_det_classes,
                norm=config.head_norm,
                fpn_channels=config.det_fpn_channels,
            )
            if config.has_detection else None
        )

    def reset_non_persistent_buffers(self) -> None:
        """(Re)create the normalisation buffers from the config (after loading onto the meta device)."""
        device = self.pixel_mean.device if self.pixel_mean.device.type != "meta" else torch.device("cpu")
        self.pixel_mean = torch.tensor(self.config.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.pixel_std = torch.tensor(self.config.std, device=device).view(1, 3, 1, 1) * 255.0

    def forward(self, images: torch.Tensor, seg_output_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """``seg_output_size`` (H, W) makes the FCN's final upsampling go straight to that size
        (the original image's, in the Predictor) instead of the input size: one bilinear
        resize instead of two, and no full-resolution logits at the input size."""
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        features = self.trunk(x)
        outputs: dict[str, torch.Tensor] = {}
        if self.seg_head is not None:
            size = seg_output_size or (images.shape[-2], images.shape[-1])
            outputs[SEG_LOGITS] = self.seg_head(features, size)
        if self.det_head is not None:
            outputs.update(self.det_head(features))
        return outputs

    def score_map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the FCN branch's class scores before its final upsampling (the map of its
        shallowest skip stage, or stride 32 without a skip). ``forward(images, score_map_size(...))``
        returns the scores unresampled, for the caller to resize once to any size."""
        halvings = int(math.log2(STAGE_STRIDES[self.config.seg_skips[-1]])) if self.config.seg_skips else 5
        return halve(int(input_size[0]), halvings), halve(int(input_size[1]), halvings)

    def anchors(self, input_size: tuple[int, int] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Default boxes [A, 4] (XYXY input pixels) matching the detection outputs."""
        if self.anchor_generator is None:
            raise RuntimeError("this network has no detection branch")
        return self.anchor_generator.anchors(input_size, device)


class MultitaskNet(PerceptionNet):
    """Shared trunk, FCN segmentation branch and SSD detection branch in one forward pass."""

    def __init__(self, config: ModelConfig):
        if set(config.tasks) != {"segmentation", "detection"}:
            raise ValueError(f"MultitaskNet needs both tasks, config has {config.tasks}")
        super().__init__(config)


class SegmentationNet(PerceptionNet):
    """Single-task baseline: the same trunk with only the FCN branch."""

    def __init__(self, config: ModelConfig):
        if tuple(config.tasks) != ("segmentation",):
            raise ValueError(f"SegmentationNet needs tasks=('segmentation',), config has {config.tasks}")
        super().__init__(config)


class DetectionNet(PerceptionNet):
    """Single-task baseline: the same trunk with only the SSD branch."""

    def __init__(self, config: ModelConfig):
        if tuple(config.tasks) != ("detection",):
            raise ValueError(f"DetectionNet needs tasks=('detection',), config has {config.tasks}")
        super().__init__(config)


def build_model(config: ModelConfig, trunk_weights: str | None = None) -> PerceptionNet:
    """Build the network ``config`` describes; ``trunk_weights`` is a file or ``"imagenet"``."""
    cls = {"multitask": MultitaskNet, "segmentation": SegmentationNet, "detection": DetectionNet}[config.kind]
    model = cls(config)
    if trunk_weights:
        from .trunks import load_pretrained_trunk

        load_pretrained_trunk(model.trunk, trunk_weights)
    return model
