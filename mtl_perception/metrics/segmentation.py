"""Dataset-level semantic segmentation metrics from one confusion matrix.

Martí & Maki (2017) report mean IoU of the segmentation branch; like the
PASCAL VOC protocol, IoU here is computed from a single confusion matrix
accumulated over the whole dataset, never as an average of per-image IoUs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..data.base import IGNORE_INDEX


def _as_integer_array(labels: Any, what: str) -> np.ndarray:
    """Return ``labels`` (numpy array or torch tensor) as an integer numpy array."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{what} must have an integer dtype, got {labels.dtype}")
    return labels


class ConfusionMatrix:
    """Confusion matrix over a whole dataset for semantic segmentation.

    ``matrix[t, p]`` counts pixels whose target is class ``t`` and whose
    prediction is class ``p``. Pixels whose target equals ``ignore_index`` are
    skipped.

    Conventions of :meth:`compute`:

    * ``iou[c] = TP / (TP + FP + FN)``; a class with union 0 (absent from both
      target and prediction over the whole dataset) gets NaN.
    * ``miou`` is the mean over the classes whose IoU is not NaN, i.e. the
      classes that appear in the target or the prediction. A class that is only
      predicted (never in the target) therefore counts with IoU 0.
    * ``mean_accuracy`` is the mean per-class recall ``TP / (TP + FN)`` over
      classes that appear in the target.
    * Any metric with nothing to average over is NaN.

    Args:
        num_classes: number of classes C; valid labels are ``0 .. C-1``.
        ignore_index: target value to skip, or None for no ignored label.
            Must lie outside ``[0, C)``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index in [0, {num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.matrix[:] = 0

    def update(self, pred: Any, target: Any) -> None:
        """Add one image or a batch to the matrix.

        Args:
            pred: predicted class indices, integer array/tensor of shape (H, W)
                or (B, H, W).
            target: ground-truth class indices with the same shape as ``pred``;
                ``ignore_index`` marks pixels to skip.

        Raises:
            ValueError: on shape mismatch, a prediction outside ``[0, C)`` or a
                target that is neither a class index nor ``ignore_index``.
        """
        pred = _as_integer_array(pred, "pred")
        target = _as_integer_array(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {pred.shape} differs from target shape {target.shape}")
        if pred.ndim not in (2, 3):
            raise ValueError(f"expected (H, W) or (B, H, W) label maps, got shape {pred.shape}")
        pred = pred.astype(np.int64, copy=False).ravel()
        target = target.astype(np.int64, copy=False).ravel()

        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(
                f"pred holds values in [{pred.min()}, {pred.max()}], outside [0, {self.num_classes})"
            )
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        if target.size and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(
                f"target holds values in [{target.min()}, {target.max()}] that are neither a class in "
                f"[0, {self.num_classes}) nor ignore_index {self.ignore_index}"
            )
        counts = np.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix (e.g. from another process) into this one."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, ignore_index={other.ignore_index}) "
                f"into ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        self.matrix += other.matrix

    def compute(self) -> dict[str, Any]:
        """Metrics of everything accumulated so far.

        Returns:
            dict with plain Python values: ``miou`` (float), ``iou`` (list of C
            floats, NaN for classes with union 0), ``pixel_accuracy`` (float),
            ``mean_accuracy`` (float) and ``num_pixels`` (int, non-ignored pixels).
        """
        matrix = self.matrix.astype(np.float64)
        true_positive = np.diag(matrix)
        target_count = matrix.sum(axis=1)
        pred_count = matrix.sum(axis=0)
        union = target_count + pred_count - true_positive
        total = matrix.sum()

        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, true_positive / union, np.nan)
            class_accuracy = np.where(target_count > 0, true_positive / target_count, np.nan)

        return {
            "miou": _nan_mean(iou),
            "iou": [float(value) for value in iou],
            "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else math.nan,
            "mean_accuracy": _nan_mean(class_accuracy),
            "num_pixels": int(self.matrix.sum()),
        }


def _nan_mean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries, NaN when there are none (without a warning)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan
