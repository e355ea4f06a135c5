"""Architecture config: everything needed to rebuild a network, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..letterbox import RESIZE_MODES

TASKS = ("segmentation", "detection")
TRUNKS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
HEAD_NORMS = ("batch", "group")
# FCN-32s, FCN-16s (the paper's "FCN with a skip"), FCN-8s (Long et al. 2015)
SEG_SKIP_CHOICES = ((), ("c4",), ("c4", "c3"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Masks are mono8 (published and in bags): class ids 0..254, 255 is ground truth's ignore value.
MAX_SEG_CLASSES = 255


@dataclass
class ModelConfig:
    """Architecture of a multitask or single-task network.

    ``tasks`` decides the model: both tasks is :class:`MultitaskNet`, one task is
    :class:`SegmentationNet` or :class:`DetectionNet`. Everything else is shared, so a
    single-task twin differs from the multitask model only by the branch it lacks.
    """

    tasks: tuple[str, ...] = TASKS  # branches present: "segmentation", "detection"
    trunk: str = "resnet50"  # resnet18 | resnet34 | resnet50 | mobilenet_v2
    trunk_norm: str = "batch"  # batch | frozen (FrozenBatchNorm2d, for small batches on a pretrained trunk)
    num_seg_classes: int = 21  # segmentation classes, background included (mask value = index)
    num_det_classes: int = 20  # detection classes, background excluded
    input_size: tuple[int, int] = (512, 512)  # (H, W) the image is resized to
    resize: str = "stretch"  # stretch (each axis to the input size) | letterbox (keep aspect, pad); see letterbox.py
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalization, RGB in [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    seg_head_channels: int = 256  # width of the 3x3 conv before the deep score layer
    seg_skips: tuple[str, ...] = ("c4",)  # FCN skip stages, deep to shallow: () FCN-32s, ("c4",) FCN-16s, ("c4", "c3") FCN-8s
    head_norm: str = "batch"  # batch | group: the branches' norm layers (GroupNorm never mixes interleaved tasks' statistics)
    det_stages: tuple[str, ...] = ("c3", "c4", "c5")  # trunk stages that feed SSD, shallow to deep
    det_extra_channels: tuple[int, ...] = (512, 256, 256)  # extra stride-2 layers after c5
    det_fpn_channels: int = 0  # > 0: a feature pyramid (Lin et al. 2017) of this width over det_stages feeds SSD
    anchor_aspect_ratios: tuple[tuple[int, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    anchor_min_ratio: float = 0.1  # smallest default-box scale, fraction of the input side
    anchor_max_ratio: float = 0.9  # largest default-box scale

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.det_stages = tuple(self.det_stages)
        self.seg_skips = tuple(self.seg_skips)
        self.det_extra_channels = tuple(int(v) for v in self.det_extra_channels)
        self.anchor_aspect_ratios = tuple(tuple(int(a) for a in r) for r in self.anchor_aspect_ratios)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r}; choose one of {TRUNKS}")
        if self.head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {HEAD_NORMS}, got {self.head_norm!r}")
        if self.trunk_norm not in ("batch", "frozen"):
            raise ValueError(f"trunk_norm must be 'batch' or 'frozen', got {self.trunk_norm!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (H, W) with both >= 32, got {self.input_size}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must have 3 entries and std must be positive")
        if "segmentation" in self.tasks and self.num_seg_classes < 2:
            raise ValueError("num_seg_classes must be >= 2 (background plus at least one class)")
        if "segmentation" in self.tasks and self.num_seg_classes > MAX_SEG_CLASSES:
            raise ValueError(f"num_seg_classes must be <= {MAX_SEG_CLASSES}: masks are mono8 and 255 is the "
                             f"ignore value; got {self.num_seg_classes}")
        if "segmentation" in self.tasks and self.seg_skips not in SEG_SKIP_CHOICES:
            raise ValueError(f"seg_skips must be one of {list(SEG_SKIP_CHOICES)} (deep to shallow), got {self.seg_skips}")
        if "detection" in self.tasks:
            if self.num_det_classes < 1:
                raise ValueError("num_det_classes must be >= 1")
            if not self.det_stages or any(s not in ("c3", "c4", "c5") for s in self.det_stages):
                raise ValueError(f"det_stages must be drawn from c3, c4, c5, got {self.det_stages}")
            levels = len(self.det_stages) + len(self.det_extra_channels)
            if len(self.anchor_aspect_ratios) != levels:
                raise ValueError(
                    f"anchor_aspect_ratios has {len(self.anchor_aspect_ratios)} entries but the detector "
                    f"has {levels} feature levels ({len(self.det_stages)} trunk stages + "
                    f"{len(self.det_extra_channels)} extra layers)"
                )
            if self.det_fpn_channels < 0:
                raise ValueError(f"det_fpn_channels must be >= 0, got {self.det_fpn_channels}")
            if not 0 < self.anchor_min_ratio < self.anchor_max_ratio <= 1.5:
                raise ValueError("need 0 < anchor_min_ratio < anchor_max_ratio <= 1.5")

    @property
    def has_segmentation(self) -> bool:
        return "segmentation" in self.tasks

    @property
    def has_detection(self) -> bool:
        return "detection" in self.tasks

    @property
    def kind(self) -> str:
        """``multitask``, ``segmentation`` or ``detection``."""
        return "multitask" if len(self.tasks) == 2 else self.tasks[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and scalars only, so it survives ``torch.load(weights_only=True)`` and JSON."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if "seg_skip" in data and "seg_skips" not in data:
            # Checkpoints written before seg_skips: a bool for the one stride-16 skip.
            data = {**data, "seg_skips": ("c4",) if data["seg_skip"] else ()}
            del data["seg_skip"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def single_task_config(config: ModelConfig, task: str) -> ModelConfig:
    """The single-task twin of ``config``: same trunk, sizes and head settings, one branch."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return config.replace(tasks=(task,))


__all__ = ["ModelConfig", "TASKS", "TRUNKS", "single_task_config"]
