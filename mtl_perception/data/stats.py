"""Counting what a dataset holds (images, boxes per class, mask pixels per class)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from .base import IGNORE_INDEX


def summarize_dataset(dataset: Dataset, class_names: Sequence[str] | None = None) -> dict:
    """Load every sample of ``dataset`` and count its labels.

    Returns a dict with ``images``, ``det_images`` / ``seg_images`` (samples labelled for
    each task), ``boxes``, ``boxes_per_class`` (label -> count), ``mask_pixels`` (labelled,
    non-ignored pixels) and ``mask_fraction`` (class index -> share of those pixels). Labels and
    class indices are replaced by ``class_names`` entries when given (for one task's names).
    """
    images = det_images = seg_images = boxes = 0
    boxes_per_class: dict[int, int] = {}
    pixel_counts = np.zeros(256, dtype=np.int64)
    for index in range(len(dataset)):
        _, target = dataset[index]
        images += 1
        if "boxes" in target:
            det_images += 1
            boxes += len(target["boxes"])
            for label in target["labels"].tolist():
                boxes_per_class[label] = boxes_per_class.get(label, 0) + 1
        if "mask" in target:
            seg_images += 1
            pixel_counts += np.bincount(np.asarray(target["mask"]).reshape(-1), minlength=256)[:256]
    pixel_counts[IGNORE_INDEX] = 0
    labelled = int(pixel_counts.sum())
    fractions = {int(c): float(pixel_counts[c] / labelled) for c in np.nonzero(pixel_counts)[0]} if labelled else {}

    def name(index: int):
        return class_names[index] if class_names is not None and index < len(class_names) else index

    return {
        "images": images,
        "det_images": det_images,
        "seg_images": seg_images,
        "boxes": boxes,
        "boxes_per_class": {name(k): v for k, v in sorted(boxes_per_class.items())},
        "mask_pixels": labelled,
        "mask_fraction": {name(k): v for k, v in fractions.items()},
    }
