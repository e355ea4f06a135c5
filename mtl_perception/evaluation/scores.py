"""Accuracy of predictions against labels, under the one metric key scheme.

``mtl-eval`` (:func:`mtl_perception.evaluation.evaluate`) and training validation
(:func:`mtl_perception.training.engine.evaluate`) both feed :class:`TaskScores` with
:class:`~mtl_perception.predictor.Prediction` objects, so their figures carry the same keys:

* segmentation (one dataset-wide confusion matrix, as in Martí & Maki 2017): ``seg_miou``,
  ``seg_iou`` (class name -> IoU), ``seg_pixel_accuracy``, ``seg_mean_accuracy``,
  ``seg_num_pixels``, ``seg_num_images``;
* detection: ``det_voc_ap50`` (all-point PASCAL VOC AP at IoU 0.5, mean over classes),
  ``det_voc07_ap50`` (11-point), ``det_coco_map`` (COCO AP@[.5:.95]), ``det_coco_ap50``,
  ``det_coco_ap75``, ``det_per_class_ap50`` / ``det_per_class_voc07_ap50`` /
  ``det_per_class_coco_map`` (class name -> AP), ``det_num_detections``,
  ``det_num_ground_truth``, ``det_num_ignored_detections``, ``det_num_ignored_ground_truth``
  (dropped in the sample's ignored regions), ``det_num_images``, ``det_per_class_best_f1``
  (class name -> the score threshold of highest F1 with its F1, precision and recall);
* ``score``: the mean of ``seg_miou`` and ``det_voc_ap50``, those present and not NaN.

A task's keys are present only when at least one image was scored for it.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from ..data.base import IGNORE_INDEX
from ..metrics import ConfusionMatrix, DetectionEvaluator

TASK_TARGET_KEYS = {"segmentation": "mask", "detection": "boxes"}
_DETECTION_KEYS = {  # DetectionEvaluator.compute() key -> scheme key
    "voc_map": "det_voc_ap50", "voc07_map": "det_voc07_ap50", "coco_map": "det_coco_map",
    "coco_ap50": "det_coco_ap50", "coco_ap75": "det_coco_ap75", "per_class_ap_voc": "det_per_class_ap50",
    "per_class_ap_voc07": "det_per_class_voc07_ap50", "per_class_ap_coco": "det_per_class_coco_map",
    "num_detections": "det_num_detections", "num_ground_truth": "det_num_ground_truth",
    "num_ignored_detections": "det_num_ignored_detections", "num_ignored_ground_truth": "det_num_ignored_ground_truth",
    "per_class_best_f1": "det_per_class_best_f1",
}


class TaskScores:
    """Accumulates segmentation and detection accuracy over images.

    Args:
        tasks: the tasks to score (a subset of the model's).
        class_names: ``{task: names}``, the model's (segmentation names include background).
    """

    def __init__(self, tasks: Sequence[str], class_names: Mapping[str, Sequence[str]]):
        self.tasks = tuple(tasks)
        self.class_names = {task: list(class_names[task]) for task in self.tasks}
        self.confusion = (ConfusionMatrix(len(self.class_names["segmentation"]), IGNORE_INDEX)
                          if "segmentation" in self.tasks else None)
        self.detections = DetectionEvaluator(self.class_names["detection"]) if "detection" in self.tasks else None
        self.num_images = {task: 0 for task in self.tasks}

    def labelled_tasks(self, target: Any) -> list[str]:
        """The scored tasks ``target`` carries labels for (``mask``: segmentation, ``boxes``: detection)."""
        if not isinstance(target, Mapping):
            return []
        return [task for task in self.tasks if TASK_TARGET_KEYS[task] in target]

    def add(self, image_id: Hashable, prediction: Any, target: Mapping[str, Any]) -> list[str]:
        """Score one image's prediction against its target; returns the tasks it counted for.

        ``image_id`` must be unique among the images added. VOC ``difficult`` boxes are
        neither positives nor false positives; detections and boxes lying mostly inside the
        target's ``ignore_mask`` (VisDrone's ignored regions, in the prediction's pixels) are
        dropped, as the VisDrone toolkit does; mask pixels 255 are ignored.

        Raises:
            ValueError: the prediction lacks a mask the target asks for, or shapes/labels
                are invalid (from the metrics).
        """
        labelled = self.labelled_tasks(target)
        if "segmentation" in labelled:
            if prediction.mask is None:
                raise ValueError("the predictor returned no mask for a segmentation model")
            self.confusion.update(np.asarray(prediction.mask).astype(np.int64), to_numpy(target["mask"]).astype(np.int64))
        if "detection" in labelled:
            difficult = target.get("difficult")
            regions = target.get("ignore_mask")
            self.detections.add(image_id, prediction.boxes, prediction.scores, prediction.labels,
                                to_numpy(target["boxes"]).reshape(-1, 4), to_numpy(target["labels"]),
                                None if difficult is None else to_numpy(difficult).astype(bool),
                                None if regions is None else to_numpy(regions))
        for task in labelled:
            self.num_images[task] += 1
        return labelled

    def compute(self) -> dict[str, Any]:
        """The figures under the scheme's keys (NaN where undefined; see the module docstring)."""
        metrics: dict[str, Any] = {}
        primary = []
        if self.num_images.get("segmentation"):
            seg = self.confusion.compute()
            metrics.update(seg_miou=seg["miou"], seg_iou=dict(zip(self.class_names["segmentation"], seg["iou"])),
                           seg_pixel_accuracy=seg["pixel_accuracy"], seg_mean_accuracy=seg["mean_accuracy"],
                           seg_num_pixels=seg["num_pixels"], seg_num_images=self.num_images["segmentation"])
            primary.append(seg["miou"])
        if self.num_images.get("detection"):
            det = self.detections.compute()
            metrics.update({key: det[name] for name, key in _DETECTION_KEYS.items()})
            metrics["det_num_images"] = self.num_images["detection"]
            primary.append(det["voc_map"])
        finite = [value for value in primary if not math.isnan(value)]
        metrics["score"] = sum(finite) / len(finite) if finite else math.nan
        return metrics


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
