"""Evaluation metrics: dataset-level segmentation IoU and VOC/COCO detection AP.

Plain numpy/PyTorch; results are plain Python values. :func:`json_safe` turns
the NaNs they may hold (metrics that are undefined) into JSON ``null``.
"""

from __future__ import annotations

import math
from typing import Any

from mtl_perception.metrics.detection import DetectionEvaluator, voc_average_precision
from mtl_perception.metrics.segmentation import ConfusionMatrix


def json_safe(value: Any) -> Any:
    """Copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinite floats become None; dicts, lists and tuples are copied
    recursively (tuples become lists); numpy scalars become Python numbers.

    Args:
        value: a metrics result such as ``ConfusionMatrix.compute()``.
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["ConfusionMatrix", "DetectionEvaluator", "json_safe", "voc_average_precision"]
