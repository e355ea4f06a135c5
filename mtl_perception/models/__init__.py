"""Networks: shared trunk, FCN-with-skip and SSD branches, multitask and single-task."""

from .anchors import AnchorGenerator, feature_sizes
from .config import TASKS, TRUNKS, ModelConfig, single_task_config
from .nets import (
    BBOX_REGRESSION,
    CLS_LOGITS,
    OUTPUT_KEYS,
    SEG_LOGITS,
    DetectionNet,
    MultitaskNet,
    PerceptionNet,
    SegmentationNet,
    build_model,
)
from .trunks import PretrainedWeightsError, Trunk, find_imagenet_weights, load_pretrained_trunk

__all__ = [
    "AnchorGenerator", "feature_sizes", "TASKS", "TRUNKS", "ModelConfig", "single_task_config",
    "BBOX_REGRESSION", "CLS_LOGITS", "OUTPUT_KEYS", "SEG_LOGITS", "DetectionNet", "MultitaskNet",
    "PerceptionNet", "SegmentationNet", "build_model", "PretrainedWeightsError", "Trunk",
    "find_imagenet_weights", "load_pretrained_trunk",
]
