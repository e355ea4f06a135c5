"""Task branches: FCN with a skip connection (segmentation) and SSD (detection)."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.ssd import SSDHead
from torchvision.ops import FeaturePyramidNetwork

from .config import HEAD_NORMS

GROUP_NORM_GROUPS = 32  # Wu & He 2018's default; fewer where the channels do not divide


def head_norm_layer(kind: str, channels: int) -> nn.Module:
    """The branches' normalisation layer: ``batch`` (BatchNorm2d) or ``group`` (GroupNorm).

    GroupNorm normalises each sample on its own, so in interleaved batches a branch's
    statistics never mix tree tiles with building tiles (BatchNorm's do, even for samples
    whose loss the branch ignores). Groups: ``gcd(32, channels)``.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels)
    raise ValueError(f"head norm must be one of {HEAD_NORMS}, got {kind!r}")


def _skip_layer_name(stage: str) -> str:
    # "skip_score" for the stride-16 skip keeps FCN-16s checkpoints from before FCN-8s loadable.
    return "skip_score" if stage == "c4" else f"skip_score_{stage}"


class FCNSkipHead(nn.Module):
    """FCN segmentation branch with skip connections (Long et al. 2015).

    Class scores from the deepest features (``c5``, stride 32) are upsampled to each skip
    stage in turn (deep to shallow), added to a score map computed from that stage, and the
    last sum is upsampled to the requested output size: no skip is FCN-32s, ``c4`` FCN-16s
    (the paper's "FCN with a skip"), ``c4`` then ``c3`` FCN-8s.

    Args:
        deep_channels: channels of ``c5``.
        skip_channels: ``{stage: channels}`` of the skip stages, deep to shallow (empty: FCN-32s).
        num_classes: segmentation classes, background included.
        mid_channels: width of the 3x3 conv before the deep score layer.
        norm: ``batch`` or ``group`` (see :func:`head_norm_layer`).
    """

    def __init__(self, deep_channels: int, skip_channels: dict[str, int], num_classes: int, mid_channels: int = 256,
                 norm: str = "batch"):
        super().__init__()
        self.deep_score = nn.Sequential(
            nn.Conv2d(deep_channels, mid_channels, 3, padding=1, bias=False),
            head_norm_layer(norm, mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(mid_channels, num_classes, 1),
        )
        self.skip_stages = tuple(skip_channels)
        for stage, channels in skip_channels.items():
            layer = nn.Conv2d(channels, num_classes, 1)
            # FCN initialises the skip score layers to zero, so training starts from the coarser output.
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.add_module(_skip_layer_name(stage), layer)

    def forward(self, features: dict[str, torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        """Returns logits [B, num_classes, *output_size]."""
        score = self.deep_score(features["c5"])
        for stage in self.skip_stages:
            skip = features[stage]
            score = F.interpolate(score, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            score = score + getattr(self, _skip_layer_name(stage))(skip)
        return F.interpolate(score, size=output_size, mode="bilinear", align_corners=False)


class SSDExtraLayers(nn.Module):
    """SSD's extra feature layers: 1x1 reduce then 3x3 stride-2 conv, repeated after ``c5``.

    Each layer halves the resolution (rounding up), giving the coarse levels that hold
    the default boxes for large objects. As in SSD they have no normalisation: the
    coarsest maps are 1x1, where batch statistics of a small batch are meaningless.
    """

    def __init__(self, in_channels: int, out_channels: tuple[int, ...]):
        super().__init__()
        layers = []
        for out in out_channels:
            mid = max(out // 2, 32)
            layers.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, mid, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, out, 3, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = out
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        return outputs


class SSDBranch(nn.Module):
    """SSD detection branch: trunk stages plus extra layers feed torchvision's ``SSDHead``.

    Args:
        stage_channels: channels of each trunk stage used (in ``stages`` order).
        stages: trunk stage keys, shallow to deep, e.g. ``("c3", "c4", "c5")``.
        c5_channels: channels of ``c5``, where the extra layers start.
        extra_channels: output channels of each extra layer after ``c5``.
        anchors_per_location: default boxes per cell for every level.
        num_classes: detection classes, background excluded.
        norm: ``batch`` or ``group`` normalisation of the trunk maps (see :func:`head_norm_layer`).
        fpn_channels: > 0 passes the normalised trunk maps through torchvision's
            ``FeaturePyramidNetwork`` of this width (Lin et al. 2017): the shallow maps, whose
            few channels hold the small objects, get the deeper maps' semantics top-down.
    """

    def __init__(
        self,
        stage_channels: list[int],
        stages: tuple[str, ...],
        c5_channels: int,
        extra_channels: tuple[int, ...],
        anchors_per_location: list[int],
        num_classes: int,
        norm: str = "batch",
        fpn_channels: int = 0,
    ):
        super().__init__()
        self.stages = stages
        self.extras = SSDExtraLayers(c5_channels, extra_channels)
        # Normalise the trunk maps: their scales differ by orders of magnitude
        # between stages (the reason SSD adds L2Norm on conv4_3).
        self.stage_norms = nn.ModuleList(head_norm_layer(norm, c) for c in stage_channels)
        self.fpn = FeaturePyramidNetwork(list(stage_channels), fpn_channels) if fpn_channels > 0 else None
        level_channels = [fpn_channels] * len(stages) if self.fpn is not None else list(stage_channels)
        # +1: SSD's softmax has a background class at index 0.
        self.head = SSDHead(level_channels + list(extra_channels), anchors_per_location, num_classes + 1)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Returns ``bbox_regression`` [B, A, 4] and ``cls_logits`` [B, A, num_classes + 1]."""
        maps = [norm(features[key]) for key, norm in zip(self.stages, self.stage_norms)]
        if self.fpn is not None:
            maps = list(self.fpn(OrderedDict(zip(self.stages, maps))).values())
        maps += self.extras(features["c5"])
        return self.head(maps)
