"""Tests of mtl_perception.metrics against hand-worked values and independent oracles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO as ReferenceCOCO
from pycocotools.cocoeval import COCOeval as ReferenceCOCOeval

from mtl_perception.metrics import ConfusionMatrix, DetectionEvaluator, json_safe, voc_average_precision

# ---------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------


def reference_segmentation_metrics(preds, targets, num_classes, ignore_index):
    """Dataset-level IoU from per-class pixel sets, written independently of ConfusionMatrix."""
    pred = np.concatenate([p.ravel() for p in preds])
    target = np.concatenate([t.ravel() for t in targets])
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    iou, accuracy = [], []
    for c in range(num_classes):
        in_target, in_pred = target == c, pred == c
        intersection = np.logical_and(in_target, in_pred).sum()
        union = np.logical_or(in_target, in_pred).sum()
        iou.append(intersection / union if union else math.nan)
        if in_target.any():
            accuracy.append(intersection / in_target.sum())
    present = [value for value in iou if not math.isnan(value)]
    return {
        "iou": iou,
        "miou": sum(present) / len(present),
        "pixel_accuracy": (pred == target).mean(),
        "mean_accuracy": sum(accuracy) / len(accuracy),
        "num_pixels": int(valid.sum()),
    }


def noisy_segmentation_dataset(seed=0):
    """Three images of different sizes: blocky scenes, a noisy prediction and ignored borders."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for height, width in [(24, 32), (40, 30), (16, 16)]:
        target = np.zeros((height, width), dtype=np.uint8)
        target[height // 4 : height // 2, width // 5 : width // 2] = 1
        target[height // 2 :, width // 2 :] = 2
        target[: height // 5, -width // 4 :] = 3
        target[0, :] = 255
        target[:, 0] = 255
        pred = np.where(rng.random(target.shape) < 0.8, target, rng.integers(0, 4, target.shape))
        pred = np.where(target == 255, rng.integers(0, 4, target.shape), pred).astype(np.uint8)
        preds.append(pred)
        targets.append(target)
    return preds, targets


def test_confusion_matrix_hand_worked():
    # target  [[0 0 1]      pred [[0 1 1]
    #          [1 1 255]]        [1 0 0]]   (last pixel ignored)
    # class 0: TP 1, FP 1 (pred 0 on target 1), FN 1 -> IoU 1/3
    # class 1: TP 2, FP 1, FN 1                      -> IoU 2/4
    # pixel accuracy 3/5; class accuracies 1/2 and 2/3
    metric = ConfusionMatrix(num_classes=2, ignore_index=255)
    metric.update(np.array([[0, 1, 1], [1, 0, 0]]), np.array([[0, 0, 1], [1, 1, 255]]))
    result = metric.compute()
    np.testing.assert_array_equal(metric.matrix, [[1, 1], [1, 2]])
    assert result["iou"] == pytest.approx([1 / 3, 1 / 2])
    assert result["miou"] == pytest.approx(5 / 12)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["num_pixels"] == 5


def test_confusion_matrix_matches_reference_over_dataset():
    preds, targets = noisy_segmentation_dataset()
    num_classes = 5  # class 4 never appears: IoU NaN, left out of the mean
    metric = ConfusionMatrix(num_classes, ignore_index=255)
    for pred, target in zip(preds, targets):
        metric.update(pred, target)
    result = metric.compute()
    expected = reference_segmentation_metrics(preds, targets, num_classes, 255)

    np.testing.assert_allclose(result["iou"], expected["iou"], rtol=1e-12)
    assert math.isnan(result["iou"][4])
    assert result["miou"] == pytest.approx(expected["miou"], rel=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], rel=1e-12)
    assert result["mean_accuracy"] == pytest.approx(expected["mean_accuracy"], rel=1e-12)
    assert result["num_pixels"] == expected["num_pixels"]
    assert 0.5 < result["miou"] < 0.95  # the fixture is a non-trivial operating point (the values are checked above)


def test_confusion_matrix_is_dataset_level_not_per_image_mean():
    # Image A: 100 pixels of class 1 all right. Image B: 4 pixels of class 1, 2 right.
    target_a = np.ones((10, 10), dtype=np.int64)
    pred_a = target_a.copy()
    target_b = np.array([[1, 1], [1, 1]])
    pred_b = np.array([[1, 1], [0, 0]])
    metric = ConfusionMatrix(num_classes=2, ignore_index=255)
    metric.update(pred_a, target_a)
    metric.update(pred_b, target_b)
    class_one_iou = metric.compute()["iou"][1]

    per_image = []
    for pred, target in [(pred_a, target_a), (pred_b, target_b)]:
        single = ConfusionMatrix(num_classes=2, ignore_index=255)
        single.update(pred, target)
        per_image.append(single.compute()["iou"][1])
    assert per_image == pytest.approx([1.0, 0.5])
    assert class_one_iou == pytest.approx(102 / 104)
    assert abs(class_one_iou - np.mean(per_image)) > 0.2


def test_confusion_matrix_batches_tensors_and_merge_agree():
    preds, targets = noisy_segmentation_dataset(seed=3)
    sequential = ConfusionMatrix(4)
    for pred, target in zip(preds, targets):
        sequential.update(pred.astype(np.int32), target.astype(np.int16))

    batched = ConfusionMatrix(4)
    batched.update(torch.from_numpy(preds[2][None]).long(), torch.from_numpy(targets[2][None]))
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    first.update(torch.from_numpy(preds[0]), torch.from_numpy(targets[0]))
    second.update(preds[1], targets[1])
    first.merge(second)
    first.merge(batched)
    np.testing.assert_array_equal(first.matrix, sequential.matrix)
    assert json_safe(first.compute()) == json_safe(sequential.compute())

    first.reset()
    assert first.matrix.sum() == 0
    empty = first.compute()
    assert empty["num_pixels"] == 0 and math.isnan(empty["miou"]) and math.isnan(empty["pixel_accuracy"])


def test_confusion_matrix_class_only_predicted_counts_as_zero():
    metric = ConfusionMatrix(num_classes=3, ignore_index=None)
    metric.update(np.array([[0, 2]]), np.array([[0, 0]]))
    result = metric.compute()
    assert result["iou"][0] == pytest.approx(0.5)
    assert math.isnan(result["iou"][1])
    assert result["iou"][2] == 0.0
    assert result["miou"] == pytest.approx(0.25)
    assert result["mean_accuracy"] == pytest.approx(0.5)


def test_confusion_matrix_rejects_bad_input():
    metric = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="pred holds values"):
        metric.update(np.array([[0, 3]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="pred holds values"):
        metric.update(np.array([[0, -1]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="target holds values"):
        metric.update(np.array([[0, 1]]), np.array([[0, 7]]))
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="H, W"):
        metric.update(np.zeros(4, dtype=int), np.zeros(4, dtype=int))
    with pytest.raises(TypeError, match="integer dtype"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(3, ignore_index=2)
    with pytest.raises(ValueError, match="cannot merge"):
        metric.merge(ConfusionMatrix(4))
    assert metric.matrix.sum() == 0


# ---------------------------------------------------------------------------
# VOC detection AP
# ---------------------------------------------------------------------------


def add_hand_worked_scene(evaluator, difficult_d):
    """Class 0 ground truth A, B (image 1), C, D (image 2); D optionally difficult.

    Detections, by score:
      d5 .95 on D exactly            (IoU 1 with D)
      d1 .90 on A exactly            (IoU 1 with A)               -> TP
      d2 .80 [0,0,10,9]              (IoU 0.9 with A, taken)      -> FP (duplicate)
      d3 .70 image 2 [0,0,10,6]      (IoU 0.6 with C)             -> TP
      d6 .65 on D again              (IoU 1 with D, taken/ignored)
      d4 .60 [50,50,60,60]           (no overlap)                 -> FP
    """
    evaluator.add(
        "image1",
        pred_boxes=np.array([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]], dtype=np.float32),
        pred_scores=np.array([0.9, 0.8, 0.6]),
        pred_labels=np.array([0, 0, 0]),
        gt_boxes=np.array([[0, 0, 10, 10], [20, 0, 30, 10]]),
        gt_labels=np.array([0, 0]),
    )
    evaluator.add(
        "image2",
        pred_boxes=torch.tensor([[0.0, 0, 10, 6], [30, 30, 40, 40], [30, 30, 40, 40]]),
        pred_scores=torch.tensor([0.7, 0.95, 0.65]),
        pred_labels=torch.tensor([0, 0, 0]),
        gt_boxes=torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40]]),
        gt_labels=torch.tensor([0, 0]),
        gt_difficult=torch.tensor([False, difficult_d]),
    )


def test_voc_ap_hand_worked_with_difficult_box():
    # D difficult: d5, d6 ignored, 3 positives. Order TP FP TP FP:
    # recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2.
    # all-point: 1/3 * 1 + 1/3 * 2/3 = 5/9
    # 11-point: t = 0..0.3 -> 1 (4 points), t = 0.4..0.6 -> 2/3 (3 points), rest 0 -> 6/11
    evaluator = DetectionEvaluator(["boat", "person"])
    add_hand_worked_scene(evaluator, difficult_d=True)
    result = evaluator.compute()
    assert result["per_class_ap_voc"]["boat"] == pytest.approx(5 / 9)
    assert result["per_class_ap_voc07"]["boat"] == pytest.approx(6 / 11)
    assert math.isnan(result["per_class_ap_voc"]["person"])
    assert result["voc_map"] == pytest.approx(5 / 9)
    assert result["voc07_map"] == pytest.approx(6 / 11)
    assert (result["num_images"], result["num_detections"], result["num_ground_truth"]) == (2, 6, 4)


def test_voc_ap_hand_worked_without_difficult_box():
    # D counts: 4 positives. Order d5 TP, d1 TP, d2 FP, d3 TP, d6 FP (duplicate), d4 FP:
    # recall .25 .5 .5 .75 .75 .75, precision 1 1 2/3 3/4 3/5 1/2.
    # all-point: .25 * 1 + .25 * 1 + .25 * 3/4 = 0.6875
    # 11-point: t = 0..0.5 -> 1 (6 points), t = 0.6, 0.7 -> 3/4, rest 0 -> 7.5/11
    evaluator = DetectionEvaluator(["boat"])
    add_hand_worked_scene(evaluator, difficult_d=False)
    result = evaluator.compute()
    assert result["voc_map"] == pytest.approx(0.6875)
    assert result["voc07_map"] == pytest.approx(7.5 / 11)


def test_voc_ap_counts_iou_of_exactly_half_and_ignores_other_classes():
    evaluator = DetectionEvaluator(["car", "tree", "dog"])
    # IoU([0,0,10,5], [0,0,10,10]) = 50 / 100 = 0.5 exactly: a TP (devkit uses >=).
    # The "tree" detection on the car box is an FP for "tree" and leaves "car" alone.
    evaluator.add(
        0,
        pred_boxes=[[0, 0, 10, 5], [0, 0, 10, 10], [100, 100, 104.9, 110]],
        pred_scores=[0.5, 0.9, 0.4],
        pred_labels=[0, 1, 1],
        gt_boxes=[[0, 0, 10, 10], [100, 100, 110, 110]],
        gt_labels=[0, 1],
    )
    result = evaluator.compute()
    assert result["per_class_ap_voc"]["car"] == pytest.approx(1.0)
    # tree: FP (.9) then an IoU 0.49 miss (.4) -> no TP at all.
    assert result["per_class_ap_voc"]["tree"] == 0.0
    assert math.isnan(result["per_class_ap_voc"]["dog"])
    assert result["voc_map"] == pytest.approx(0.5)


def test_best_f1_threshold_hand_worked():
    # Two ground-truth boxes. Detections by falling score: TP 0.9, FP 0.8, TP 0.7, FP 0.6.
    # After each: P 1, 1/2, 2/3, 1/2 and R 1/2, 1/2, 1, 1 -> F1 2/3, 1/2, 4/5, 2/3: best at 0.7.
    evaluator = DetectionEvaluator(["tree"])
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    far = [50, 50, 60, 60]
    preds = np.array([[0, 0, 10, 10], far, [20, 0, 30, 10], far], dtype=float)
    evaluator.add("a", preds, np.array([0.9, 0.8, 0.7, 0.6]), np.zeros(4, int), gt, np.zeros(2, int))
    best = evaluator.best_f1(0)
    assert best == pytest.approx({"f1": 0.8, "score_threshold": 0.7, "precision": 2 / 3, "recall": 1.0})
    # Two FPs tied with the second TP at 0.7: no threshold keeps that TP without them (counting
    # it alone would claim P 1, R 1). A threshold of 0.7 gives P 2/4, R 1, F1 2/3; 0.9 gives
    # P 1, R 1/2, F1 2/3 as well, and the higher threshold is reported.
    tied = DetectionEvaluator(["tree"])
    tied.add("a", np.array([[0, 0, 10, 10], [20, 0, 30, 10], far, far], dtype=float), np.array([0.9, 0.7, 0.7, 0.7]),
             np.zeros(4, int), gt, np.zeros(2, int))
    assert tied.best_f1(0) == pytest.approx({"f1": 2 / 3, "score_threshold": 0.9, "precision": 1.0, "recall": 0.5})
    assert all(math.isnan(v) for v in DetectionEvaluator(["tree"]).best_f1(0).values())


def test_voc_average_precision_curves():
    # A perfect detector and an empty one.
    assert voc_average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), use_11_point=False) == 1.0
    assert voc_average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), use_11_point=True) == 1.0
    assert voc_average_precision(np.array([]), np.array([]), use_11_point=True) == 0.0
    # recall exactly 3/10 must reach the 0.3 threshold: 4 points of 1 -> 4/11.
    assert voc_average_precision(np.array([3 / 10]), np.array([1.0]), use_11_point=True) == pytest.approx(4 / 11)


def test_detection_empty_cases_do_not_crash():
    evaluator = DetectionEvaluator(["a", "b"])
    result = evaluator.compute()
    for key in ["voc07_map", "voc_map", "coco_map", "coco_ap50", "coco_ap75"]:
        assert math.isnan(result[key])

    evaluator.add("only_detections", [[0, 0, 5, 5]], [0.3], [1], np.zeros((0, 4)), [])
    result = evaluator.compute()
    assert math.isnan(result["coco_map"]) and math.isnan(result["voc_map"])

    evaluator.add("only_gt", [], [], [], [[0, 0, 8, 8]], [0])
    result = evaluator.compute()
    assert result["voc_map"] == 0.0 and result["coco_map"] == 0.0
    assert math.isnan(result["per_class_ap_coco"]["b"])
    json.dumps(json_safe(result), allow_nan=False)


def test_detection_rejects_bad_input():
    evaluator = DetectionEvaluator(["a"])
    with pytest.raises(ValueError, match="pred_boxes"):
        evaluator.add(0, [[0, 0, 5]], [0.5], [0], [], [])
    with pytest.raises(ValueError, match="x2 < x1"):
        evaluator.add(0, [[5, 0, 0, 5]], [0.5], [0], [], [])
    with pytest.raises(ValueError, match="pred_scores"):
        evaluator.add(0, [[0, 0, 5, 5]], [0.5, 0.2], [0], [], [])
    with pytest.raises(ValueError, match="gt_labels holds values"):
        evaluator.add(0, [], [], [], [[0, 0, 5, 5]], [1])
    with pytest.raises(TypeError, match="gt_labels must hold integer"):
        evaluator.add(0, [], [], [], [[0, 0, 5, 5]], [0.0])
    with pytest.raises(ValueError, match="gt_difficult"):
        evaluator.add(0, [], [], [], [[0, 0, 5, 5]], [0], [True, False])
    assert len(evaluator) == 0
    evaluator.add(0, [], [], [], [], [])
    with pytest.raises(ValueError, match="already added"):
        evaluator.add(0, [], [], [], [], [])
    with pytest.raises(ValueError, match="duplicates"):
        DetectionEvaluator(["a", "a"])


# ---------------------------------------------------------------------------
# COCO AP through faster-coco-eval, checked against pycocotools
# ---------------------------------------------------------------------------


def coco_single_match_value():
    # 2 GT, one detection with IoU 81/100 = 0.81: TP at the 7 thresholds .50-.80.
    # Recall 1/2 -> precision 1 at recall points 0, .01, ..., .50 (51 of 101).
    return 0.7 * 51 / 101


def test_coco_hand_worked_single_match():
    evaluator = DetectionEvaluator(["a"])
    evaluator.add("x", [[0, 0, 10, 10]], [0.9], [0], [[1, 1, 10, 10]], [0])
    evaluator.add("y", [], [], [], [[1, 1, 10, 10]], [0])
    result = evaluator.compute()
    assert result["coco_map"] == pytest.approx(coco_single_match_value(), abs=1e-12)
    assert result["coco_ap50"] == pytest.approx(51 / 101, abs=1e-12)
    assert result["coco_ap75"] == pytest.approx(51 / 101, abs=1e-12)
    assert result["per_class_ap_coco"]["a"] == pytest.approx(coco_single_match_value(), abs=1e-12)


def random_box(rng, size_range, width=640, height=480, near=None):
    """A box of side lengths in size_range, anywhere or overlapping ``near``."""
    w, h = rng.uniform(*size_range, size=2)
    if near is None:
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    else:
        x1 = np.clip(near[0] + rng.uniform(-0.5, 0.5) * w, 0, width - w)
        y1 = np.clip(near[1] + rng.uniform(-0.5, 0.5) * h, 0, height - h)
    return [x1, y1, x1 + w, y1 + h]


def detection_scene(seed=7, num_images=10, num_classes=3):
    """Images with overlapping small/medium/large boxes and imperfect detections.

    Returns a list of dicts with numpy arrays (xyxy boxes), one per image.
    """
    rng = np.random.default_rng(seed)
    sizes = [(8, 30), (35, 90), (100, 260)]  # COCO small / medium / large
    scenes = []
    for index in range(num_images):
        gt_boxes, gt_labels = [], []
        num_gt = 0 if index == 0 else int(rng.integers(1, 7))
        for _ in range(num_gt):
            near = gt_boxes[-1] if gt_boxes and rng.random() < 0.4 else None
            gt_boxes.append(random_box(rng, sizes[rng.integers(3)], near=near))
            gt_labels.append(int(rng.integers(num_classes)))
        gt_difficult = rng.random(num_gt) < 0.12

        pred_boxes, pred_labels = [], []
        if index != 1:  # image 1 keeps its ground truth but gets no detections
            for box, label in zip(gt_boxes, gt_labels):
                w, h = box[2] - box[0], box[3] - box[1]
                for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice
                    jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
                    x1, y1, x2, y2 = np.array(box) + jitter
                    pred_boxes.append([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])
                    pred_labels.append(label if rng.random() < 0.85 else int(rng.integers(num_classes)))
            for _ in range(int(rng.integers(0, 4))):  # background false positives
                pred_boxes.append(random_box(rng, sizes[rng.integers(3)]))
                pred_labels.append(int(rng.integers(num_classes)))
        scenes.append({
            "pred_boxes": np.array(pred_boxes, dtype=np.float64).reshape(-1, 4),
            "pred_scores": rng.uniform(0.05, 1.0, size=len(pred_boxes)),
            "pred_labels": np.array(pred_labels, dtype=np.int64),
            "gt_boxes": np.array(gt_boxes, dtype=np.float64).reshape(-1, 4),
            "gt_labels": np.array(gt_labels, dtype=np.int64),
            "gt_difficult": gt_difficult,
        })
    return scenes


def pycocotools_reference(scenes, num_classes):
    """COCO AP of ``scenes`` from pycocotools, with its own xyxy -> xywh conversion."""
    images = [{"id": 100 + index} for index in range(len(scenes))]
    annotations, results = [], []
    for image, scene in zip(images, scenes):
        for (x1, y1, x2, y2), label, difficult in zip(scene["gt_boxes"], scene["gt_labels"], scene["gt_difficult"]):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image["id"], "category_id": 10 + int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(difficult),
            })
        for (x1, y1, x2, y2), label, score in zip(scene["pred_boxes"], scene["pred_labels"], scene["pred_scores"]):
            results.append({
                "image_id": image["id"], "category_id": 10 + int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score,
            })
    ground_truth = ReferenceCOCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 10 + c, "name": str(c)} for c in range(num_classes)],
    }
    ground_truth.createIndex()
    evaluation = ReferenceCOCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    per_class = []
    for k in range(num_classes):
        values = evaluation.eval["precision"][:, :, k, 0, -1]
        per_class.append(values[values > -1].mean())
    return evaluation.stats, per_class


def test_coco_metrics_match_pycocotools(capsys):
    num_classes = 3
    scenes = detection_scene(num_classes=num_classes)
    sizes = np.concatenate([np.sqrt(np.prod(s["gt_boxes"][:, 2:] - s["gt_boxes"][:, :2], axis=1)) for s in scenes])
    assert (sizes < 32).any() and ((sizes > 32) & (sizes < 96)).any() and (sizes > 96).any()
    assert sum(s["gt_difficult"].sum() for s in scenes) > 0

    evaluator = DetectionEvaluator(["car", "person", "boat"])
    for index, scene in enumerate(scenes):
        evaluator.add(f"frame_{index:03d}", **scene)
    result = evaluator.compute()
    stats, per_class = pycocotools_reference(scenes, num_classes)
    capsys.readouterr()  # pycocotools prints its summary

    assert 0.1 < result["coco_map"] < 0.9  # a non-trivial operating point
    assert result["coco_map"] == pytest.approx(stats[0], abs=1e-6)
    assert result["coco_ap50"] == pytest.approx(stats[1], abs=1e-6)
    assert result["coco_ap75"] == pytest.approx(stats[2], abs=1e-6)
    assert [result["per_class_ap_coco"][name] for name in ["car", "person", "boat"]] == pytest.approx(
        per_class, abs=1e-6
    )
    assert result["coco_ap50"] > result["coco_map"]
    # VOC all-point AP@0.5 and COCO AP50 differ only by interpolation and the difficult rule.
    assert abs(result["voc_map"] - result["coco_ap50"]) < 0.1


def test_detection_merge_matches_single_evaluator():
    scenes = detection_scene(seed=11, num_images=6)
    names = ["car", "person", "boat"]
    single, first, second = DetectionEvaluator(names), DetectionEvaluator(names), DetectionEvaluator(names)
    for index, scene in enumerate(scenes):
        single.add(index, **scene)
        (first if index % 2 else second).add(index, **scene)
    first.merge(second)
    assert len(first) == 6
    merged, expected = first.compute(), single.compute()
    for key in ["voc07_map", "voc_map", "coco_map", "coco_ap50", "coco_ap75"]:
        assert merged[key] == pytest.approx(expected[key], abs=1e-12)
    with pytest.raises(ValueError, match="image ids"):
        first.merge(single)


def test_json_safe_turns_nan_into_null():
    value = {"miou": math.nan, "iou": [0.5, math.nan], "n": np.int64(3), "x": np.float32(0.25), "t": (1, math.inf)}
    safe = json_safe(value)
    assert safe == {"miou": None, "iou": [0.5, None], "n": 3, "x": 0.25, "t": [1, None]}
    assert type(safe["n"]) is int
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    assert math.isnan(value["miou"])  # the input is left alone
