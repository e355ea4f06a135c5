"""Object detection metrics: PASCAL VOC AP@0.5 and COCO mAP@[.5:.95].

Martí & Maki (2017) evaluate the SSD branch with PASCAL VOC mAP at IoU 0.5;
COCO-style AP is reported as well because it rewards tight localisation.

Coordinate convention: boxes are continuous pixel coordinates ``(x1, y1, x2,
y2)``; width is ``x2 - x1`` and area ``(x2 - x1) * (y2 - y1)``. The original
VOC devkit treats coordinates as inclusive pixel indices and adds 1 to widths;
we do not, in either the VOC or the COCO path (COCO ``bbox`` is ``[x1, y1,
x2 - x1, y2 - y1]``), so both paths see the same IoUs.

Difficult ground truth:

* VOC path, as in the devkit: a difficult box is not a positive, and a
  detection whose best-overlap box is difficult is ignored (neither TP nor FP).
* COCO path: a difficult box becomes ``iscrowd=1``, the only ignore flag
  COCOeval honours. It is then not a positive and detections matched to it are
  ignored, like VOC; but COCOeval measures overlap with a crowd box as
  ``intersection / detection area``, so a detection lying inside a difficult
  box is ignored even when its plain IoU is small.

Ignored regions (VisDrone's category 0, given to :meth:`DetectionEvaluator.add` as
``ignore_mask``): as in the VisDrone toolkit's ``dropObjectsInIgr.m``, ground truth and
detections with at least :data:`~mtl_perception.ignored_regions.IGNORE_REGION_OVERLAP` of
their own area inside the regions are dropped when the image is added, before any matching.
Such a detection is neither TP nor FP, such a box no positive, and the VOC and COCO paths
both see only what is left (COCOeval is never shown the dropped boxes).

The COCO numbers come from faster-coco-eval's ``COCOeval_faster`` with the
standard parameters (10 IoU thresholds, 101 recall points, at most 100
detections per image, highest scores kept).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from torchvision.ops import box_iou

from ..ignored_regions import in_ignored_regions

VOC_IOU_THRESHOLD = 0.5
# (scores falling, recall, precision) of one class, or None without positives
PrCurve = tuple[np.ndarray, np.ndarray, np.ndarray] | None


def _to_numpy(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except Exception as error:  # pragma: no cover - defensive: exotic inputs
        raise TypeError(f"{what} could not be converted to an array: {error}") from error


def _boxes(values: Any, what: str) -> np.ndarray:
    boxes = _to_numpy(values, what)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) in xyxy, got {boxes.shape}")
    boxes = boxes.astype(np.float64)
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what} contains non-finite coordinates")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{what} has boxes with x2 < x1 or y2 < y1 (expected xyxy)")
    return boxes


def _vector(values: Any, length: int, what: str, dtype: type) -> np.ndarray:
    vector = _to_numpy(values, what)
    if vector.size == 0 and length == 0:
        return np.zeros((0,), dtype=dtype)
    if vector.ndim != 1 or vector.shape[0] != length:
        raise ValueError(f"{what} must have shape ({length},), got {vector.shape}")
    return vector.astype(dtype)


def _labels(values: Any, length: int, num_classes: int, what: str) -> np.ndarray:
    labels = _to_numpy(values, what)
    if labels.size and labels.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integer class indices, got dtype {labels.dtype}")
    labels = _vector(labels, length, what, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} holds values in [{labels.min()}, {labels.max()}], outside [0, {num_classes})")
    return labels


def voc_average_precision(recall: np.ndarray, precision: np.ndarray, use_11_point: bool) -> float:
    """Area under a precision/recall curve the PASCAL VOC way.

    Args:
        recall: (D,) cumulative recall after each detection, by falling score.
        precision: (D,) cumulative precision after each detection.
        use_11_point: True for VOC2007's mean of the interpolated precision at
            recall 0, 0.1, ..., 1; False for VOC2010+'s area under the
            monotone (interpolated) curve over all recall points.

    Returns:
        AP in [0, 1]; 0 for an empty curve.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_11_point:
        # arange / 10 gives exactly-rounded thresholds, so recall 3/10 reaches 0.3.
        points = []
        for threshold in np.arange(11) / 10.0:
            reached = recall >= threshold
            points.append(precision[reached].max() if reached.any() else 0.0)
        return float(np.mean(points))
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


class DetectionEvaluator:
    """Accumulates detections and ground truth per image; computes VOC and COCO AP.

    Classes without any (non-difficult) ground truth get AP NaN and are left
    out of the means; a mean over no class is NaN. Results are plain Python
    floats and dicts (use :func:`mtl_perception.metrics.json_safe` before
    writing JSON).

    Args:
        class_names: names of the foreground classes; label ``i`` refers to
            ``class_names[i]`` (no background entry).
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        names = list(class_names)
        if not names:
            raise ValueError("class_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names contains duplicates: {names}")
        self.class_names = names
        self._images: dict[Hashable, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._images)

    def reset(self) -> None:
        """Forget every image added so far."""
        self._images.clear()

    def add(
        self,
        image_id: Hashable,
        pred_boxes: Any,
        pred_scores: Any,
        pred_labels: Any,
        gt_boxes: Any,
        gt_labels: Any,
        gt_difficult: Any | None = None,
        ignore_mask: Any | None = None,
    ) -> None:
        """Record one image's detections and ground truth.

        Args:
            image_id: any hashable id, unique per image.
            pred_boxes: (N, 4) xyxy pixel coordinates, numpy or torch.
            pred_scores: (N,) confidences.
            pred_labels: (N,) class indices into ``class_names``.
            gt_boxes: (M, 4) xyxy pixel coordinates.
            gt_labels: (M,) class indices into ``class_names``.
            gt_difficult: optional (M,) bools; True marks VOC "difficult" boxes.
            ignore_mask: optional [H, W] in the boxes' pixels, 1 inside ignored regions;
                detections and ground truth mostly inside them are dropped (module docstring).
        """
        if image_id in self._images:
            raise ValueError(f"image_id {image_id!r} was already added")
        num_classes = len(self.class_names)
        pred_boxes = _boxes(pred_boxes, "pred_boxes")
        gt_boxes = _boxes(gt_boxes, "gt_boxes")
        num_pred, num_gt = len(pred_boxes), len(gt_boxes)
        pred_scores = _vector(pred_scores, num_pred, "pred_scores", np.float64)
        if not np.isfinite(pred_scores).all():
            raise ValueError("pred_scores contains non-finite values")
        if gt_difficult is None:
            gt_difficult = np.zeros((num_gt,), dtype=bool)
        image = {
            "pred_boxes": pred_boxes,
            "pred_scores": pred_scores,
            "pred_labels": _labels(pred_labels, num_pred, num_classes, "pred_labels"),
            "gt_boxes": gt_boxes,
            "gt_labels": _labels(gt_labels, num_gt, num_classes, "gt_labels"),
            "gt_difficult": _vector(gt_difficult, num_gt, "gt_difficult", bool),
        }
        keep_pred, keep_gt = np.ones(num_pred, dtype=bool), np.ones(num_gt, dtype=bool)
        if ignore_mask is not None:
            region = _ignore_mask(ignore_mask)
            keep_pred = ~in_ignored_regions(torch.from_numpy(pred_boxes), region).numpy()
            keep_gt = ~in_ignored_regions(torch.from_numpy(gt_boxes), region).numpy()
        for key in ("pred_boxes", "pred_scores", "pred_labels"):
            image[key] = image[key][keep_pred]
        for key in ("gt_boxes", "gt_labels", "gt_difficult"):
            image[key] = image[key][keep_gt]
        image["num_ignored_detections"] = int((~keep_pred).sum())
        image["num_ignored_ground_truth"] = int((~keep_gt).sum())
        self._images[image_id] = image

    def merge(self, other: DetectionEvaluator) -> None:
        """Take over the images of another evaluator (e.g. from another process)."""
        if not isinstance(other, DetectionEvaluator):
            raise TypeError(f"can only merge a DetectionEvaluator, got {type(other).__name__}")
        if other.class_names != self.class_names:
            raise ValueError(f"class_names differ: {other.class_names} vs {self.class_names}")
        shared = self._images.keys() & other._images.keys()
        if shared:
            raise ValueError(f"both evaluators hold image ids {sorted(map(repr, shared))[:5]}")
        self._images.update(other._images)

    def compute(self) -> dict[str, Any]:
        """VOC and COCO metrics over all images added so far.

        Returns:
            dict with ``voc07_map``, ``voc_map``, ``coco_map``, ``coco_ap50``,
            ``coco_ap75`` (floats), ``per_class_ap_voc07``, ``per_class_ap_voc``,
            ``per_class_ap_coco`` (class name -> float), ``num_images``,
            ``num_detections`` and ``num_ground_truth`` (ints; the boxes scored,
            difficult ones included), ``num_ignored_detections`` and
            ``num_ignored_ground_truth`` (ints; dropped in ignored regions),
            ``per_class_best_f1`` (class name -> :meth:`best_f1`).
        """
        voc07, voc, best_f1 = {}, {}, {}
        for class_index, name in enumerate(self.class_names):
            curve = self._class_pr_curve(class_index)  # once per class, for both AP and F1
            voc07[name], voc[name] = _voc_aps(curve)
            best_f1[name] = _best_f1(curve)
        coco = self._coco_metrics()
        return {
            "voc07_map": _nan_mean(voc07.values()),
            "voc_map": _nan_mean(voc.values()),
            "per_class_ap_voc07": voc07,
            "per_class_ap_voc": voc,
            **coco,
            "num_images": len(self._images),
            "num_detections": sum(len(image["pred_scores"]) for image in self._images.values()),
            "num_ground_truth": sum(len(image["gt_labels"]) for image in self._images.values()),
            "num_ignored_detections": sum(image["num_ignored_detections"] for image in self._images.values()),
            "num_ignored_ground_truth": sum(image["num_ignored_ground_truth"] for image in self._images.values()),
            "per_class_best_f1": best_f1,
        }

    def best_f1(self, class_index: int) -> dict[str, float]:
        """The score threshold with the highest F1 (VOC matching at IoU 0.5) of one class:
        ``{"f1", "score_threshold", "precision", "recall"}``; NaN without positives or detections.
        Keeping detections scoring at least ``score_threshold`` gives that precision and recall."""
        return _best_f1(self._class_pr_curve(class_index))

    def _class_pr_curve(self, class_index: int) -> PrCurve:
        """(scores falling, recall, precision) after each detection of one class, difficult
        matches left out; None without positives."""
        num_positives = 0
        scores, is_true_positive, is_ignored = [], [], []
        for image in self._images.values():
            gt_mask = image["gt_labels"] == class_index
            gt_boxes = image["gt_boxes"][gt_mask]
            gt_difficult = image["gt_difficult"][gt_mask]
            num_positives += int((~gt_difficult).sum())
            pred_mask = image["pred_labels"] == class_index
            pred_scores = image["pred_scores"][pred_mask]
            if pred_scores.size == 0:
                continue
            order = np.argsort(-pred_scores, kind="stable")
            pred_scores = pred_scores[order]
            pred_boxes = image["pred_boxes"][pred_mask][order]
            true_positive = np.zeros(len(pred_scores), dtype=bool)
            ignored = np.zeros(len(pred_scores), dtype=bool)
            if len(gt_boxes):
                # Within an image, matching by falling score equals the devkit's
                # global order: detections of other images do not interact.
                overlaps = box_iou(torch.from_numpy(pred_boxes), torch.from_numpy(gt_boxes)).numpy()
                overlaps = np.nan_to_num(overlaps, nan=0.0)  # two zero-area boxes
                already_detected = np.zeros(len(gt_boxes), dtype=bool)
                for det, row in enumerate(overlaps):
                    best = int(row.argmax())
                    if row[best] < VOC_IOU_THRESHOLD:
                        continue
                    if gt_difficult[best]:
                        ignored[det] = True
                    elif not already_detected[best]:
                        true_positive[det] = True
                        already_detected[best] = True
            scores.append(pred_scores)
            is_true_positive.append(true_positive)
            is_ignored.append(ignored)

        if num_positives == 0:
            return None
        if not scores:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        scores = np.concatenate(scores)
        kept = ~np.concatenate(is_ignored)
        order = np.argsort(-scores[kept], kind="stable")
        true_positive = np.concatenate(is_true_positive)[kept][order]
        tp_cumulative = np.cumsum(true_positive)
        fp_cumulative = np.cumsum(~true_positive)
        recall = tp_cumulative / num_positives
        precision = tp_cumulative / np.maximum(tp_cumulative + fp_cumulative, 1)
        return scores[kept][order], recall, precision

    def coco_datasets(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The accumulated data in COCO form, as used for the COCO metrics.

        Images get ids 1..N in insertion order, classes ids 1..C, annotations
        ids from 1. Difficult boxes are ``iscrowd=1``.

        Returns:
            (ground-truth dataset dict with ``images``, ``categories`` and
            ``annotations``; list of detection result dicts with ``image_id``,
            ``category_id``, ``bbox`` in xywh and ``score``).
        """
        images, gt_annotations, detections = [], [], []
        for coco_image_id, image in enumerate(self._images.values(), start=1):
            images.append({"id": coco_image_id})
            for box, label, difficult in zip(image["gt_boxes"], image["gt_labels"], image["gt_difficult"]):
                xywh = _xywh(box)
                gt_annotations.append({
                    "id": len(gt_annotations) + 1,
                    "image_id": coco_image_id,
                    "category_id": int(label) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": int(difficult),
                })
            for box, score, label in zip(image["pred_boxes"], image["pred_scores"], image["pred_labels"]):
                detections.append({
                    "image_id": coco_image_id,
                    "category_id": int(label) + 1,
                    "bbox": _xywh(box),
                    "score": float(score),
                })
        categories = [{"id": index + 1, "name": name} for index, name in enumerate(self.class_names)]
        ground_truth = {"images": images, "categories": categories, "annotations": gt_annotations}
        return ground_truth, detections

    def _coco_metrics(self) -> dict[str, Any]:
        ground_truth, detections = self.coco_datasets()
        nan_per_class = {name: math.nan for name in self.class_names}
        if not ground_truth["annotations"]:
            return {"coco_map": math.nan, "coco_ap50": math.nan, "coco_ap75": math.nan,
                    "per_class_ap_coco": nan_per_class}

        silent = lambda *args, **kwargs: None  # noqa: E731
        coco_gt = COCO(ground_truth, print_function=silent)
        # Built like COCO.loadRes does it, which cannot take an empty result list.
        dt_annotations = [
            {**detection, "id": index, "area": detection["bbox"][2] * detection["bbox"][3], "iscrowd": 0}
            for index, detection in enumerate(detections, start=1)
        ]
        coco_dt = COCO(
            {"images": ground_truth["images"], "categories": ground_truth["categories"],
             "annotations": dt_annotations},
            print_function=silent,
        )
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=silent)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

        # precision: [IoU thresholds, recall points, classes, area ranges, max dets];
        # -1 marks classes without ground truth, as in COCOeval.summarize.
        precision = np.asarray(evaluator.eval["precision"])
        all_areas = evaluator.params.areaRngLbl.index("all")
        per_class = {}
        for class_position, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, class_position, all_areas, -1]
            values = values[values > -1]
            per_class[self.class_names[category_id - 1]] = float(values.mean()) if values.size else math.nan
        stats = [float(value) if value > -1 else math.nan for value in evaluator.stats[:3]]
        return {
            "coco_map": stats[0],
            "coco_ap50": stats[1],
            "coco_ap75": stats[2],
            "per_class_ap_coco": {**nan_per_class, **per_class},
        }


def _voc_aps(curve: PrCurve) -> tuple[float, float]:
    """(11-point AP, all-point AP) of a class's curve (:meth:`DetectionEvaluator._class_pr_curve`);
    NaN without positives, 0 without detections."""
    if curve is None:
        return math.nan, math.nan
    _, recall, precision = curve
    if recall.size == 0:
        return 0.0, 0.0
    return (
        voc_average_precision(recall, precision, use_11_point=True),
        voc_average_precision(recall, precision, use_11_point=False),
    )


def _best_f1(curve: PrCurve) -> dict[str, float]:
    """:meth:`DetectionEvaluator.best_f1` of a class's curve."""
    if curve is None or curve[0].size == 0:
        return {"f1": math.nan, "score_threshold": math.nan, "precision": math.nan, "recall": math.nan}
    scores, recall, precision = curve
    # Only the last detection of a run of equal scores is a threshold one can set.
    last_of_score = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(last_of_score, f1, -1.0)
    best = int(np.argmax(f1))
    return {"f1": float(f1[best]), "score_threshold": float(scores[best]),
            "precision": float(precision[best]), "recall": float(recall[best])}


def _ignore_mask(values: Any) -> torch.Tensor:
    mask = _to_numpy(values, "ignore_mask")
    if mask.ndim != 2:
        raise ValueError(f"ignore_mask must have shape (H, W), got {mask.shape}")
    return torch.from_numpy(np.ascontiguousarray(mask))


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(value) for value in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _nan_mean(values: Any) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return float(sum(finite) / len(finite)) if finite else math.nan
