"""Ignored regions in evaluation: detections and boxes mostly inside VisDrone's category-0 regions
are dropped before matching (the toolkit's dropObjectsInIgr.m), in the VOC and the COCO path alike."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dataset_fixtures import VISDRONE_LINES, write_visdrone
from mtl_perception.data.visdrone import VISDRONE_CLASSES, VisDroneDetection
from mtl_perception.evaluation import evaluate
from mtl_perception.ignored_regions import IGNORE_REGION_OVERLAP, ignored_fraction, in_ignored_regions
from mtl_perception.losses import ignored_anchors
from mtl_perception.metrics import DetectionEvaluator
from mtl_perception.predictor import StageTimings

FIRST = next(iter(VISDRONE_LINES))


def region_mask(value=1):
    """100 x 100 image whose bottom-right quarter (x, y >= 50) is an ignored region."""
    mask = np.zeros((100, 100), np.uint8)
    mask[50:, 50:] = value
    return mask


def one_hit_and_one_false_positive(false_positive_box, ignore_mask):
    """GT [10,10,30,30]; a hit on it (score .8) and a higher-scored box elsewhere (score .9)."""
    evaluator = DetectionEvaluator(["car"])
    evaluator.add("image", pred_boxes=[[10, 10, 30, 30], false_positive_box], pred_scores=[0.8, 0.9],
                  pred_labels=[0, 0], gt_boxes=[[10, 10, 30, 30]], gt_labels=[0], ignore_mask=ignore_mask)
    return evaluator.compute()


def test_a_false_positive_inside_an_ignored_region_is_neither_tp_nor_fp():
    # Counted, the .9 box comes first: precision 0 then 1/2 at recall 1. The interpolated precision
    # is 1/2 at every recall level, so all-point, 11-point and COCO AP (IoU 1 with the hit, so at
    # all 10 thresholds) are each 1/2. Dropped, only the hit is left: AP 1.
    inside = [60, 60, 80, 80]
    counted = one_hit_and_one_false_positive(inside, None)
    assert (counted["voc_map"], counted["voc07_map"]) == (0.5, 0.5)
    assert counted["coco_map"] == pytest.approx(0.5) and counted["coco_ap50"] == pytest.approx(0.5)
    assert (counted["num_detections"], counted["num_ignored_detections"]) == (2, 0)
    dropped = one_hit_and_one_false_positive(inside, region_mask())
    assert (dropped["voc_map"], dropped["voc07_map"]) == (1.0, 1.0)
    assert dropped["coco_map"] == pytest.approx(1.0) and dropped["coco_ap75"] == pytest.approx(1.0)
    assert (dropped["num_detections"], dropped["num_ignored_detections"]) == (1, 1)
    # Only value 1 marks a region: a letterbox's padding (255) is none.
    padded = one_hit_and_one_false_positive(inside, region_mask(value=255))
    assert padded["voc_map"] == 0.5 and padded["num_ignored_detections"] == 0


@pytest.mark.parametrize("left, covered, ignored", [
    (36, 0.3, False),  # columns 50..56 of 36..56 inside: 6/20
    (40, 0.5, True),   # 10/20: exactly the threshold is ignored, as dropObjectsInIgr.m keeps < 0.5 only
    (44, 0.7, True),   # 14/20
])
def test_a_detection_counts_as_ignored_from_half_its_area_inside(left, covered, ignored):
    box = [left, 60, left + 20, 80]
    assert IGNORE_REGION_OVERLAP == 0.5
    assert ignored_fraction(torch.tensor([box], dtype=torch.float32), torch.from_numpy(region_mask())).item() == \
        pytest.approx(covered)
    result = one_hit_and_one_false_positive(box, region_mask())
    assert result["voc_map"] == (1.0 if ignored else 0.5)
    assert result["coco_map"] == pytest.approx(1.0 if ignored else 0.5)
    assert result["num_ignored_detections"] == int(ignored)


def test_ground_truth_inside_an_ignored_region_is_no_positive():
    # GT A [10,10,30,30] is found, GT B [60,60,80,80] (in the region) is not.
    # Counted: recall stops at 1/2 with precision 1: all-point AP 1/2, 11-point 6/11 (t = 0..0.5),
    # COCO 51/101 (recall points 0, .01, ..., .50). Dropped: B is no positive, AP 1.
    def scores(ignore_mask):
        evaluator = DetectionEvaluator(["car"])
        evaluator.add("image", pred_boxes=[[10, 10, 30, 30]], pred_scores=[0.8], pred_labels=[0],
                      gt_boxes=[[10, 10, 30, 30], [60, 60, 80, 80]], gt_labels=[0, 0], ignore_mask=ignore_mask)
        return evaluator.compute()

    counted = scores(None)
    assert counted["voc_map"] == 0.5 and counted["voc07_map"] == pytest.approx(6 / 11)
    assert counted["coco_map"] == pytest.approx(51 / 101)
    dropped = scores(torch.from_numpy(region_mask()))
    assert (dropped["voc_map"], dropped["voc07_map"]) == (1.0, 1.0) and dropped["coco_map"] == pytest.approx(1.0)
    assert (dropped["num_ground_truth"], dropped["num_ignored_ground_truth"]) == (1, 1)


def test_the_evaluator_and_the_ssd_loss_apply_one_rule():
    mask = torch.from_numpy(region_mask())
    boxes = torch.tensor([[60.0, 60, 80, 80], [36, 60, 56, 80], [40, 60, 60, 80], [0, 0, 10, 10],
                          [90, 90, 110, 110], [55, 55, 55, 70]])  # ..., 1/4 inside the image, zero area
    assert in_ignored_regions(boxes, mask).tolist() == [True, False, True, False, False, False]
    assert in_ignored_regions(boxes, mask).tolist() == ignored_anchors(boxes, mask).tolist()
    with pytest.raises(ValueError, match=r"ignore_mask must have shape \(H, W\)"):
        DetectionEvaluator(["car"]).add("image", [], [], [], [], [], ignore_mask=np.zeros((1, 4, 4)))


def test_the_metrics_do_not_load_the_training_losses():
    code = "import sys, mtl_perception.metrics; assert 'mtl_perception.losses' not in sys.modules, 'losses loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- through the VisDrone reader: regions reach evaluate() as the sample's ignore_mask -------------


class VisDroneAnswers:
    """Predicts each image's ground truth at score .5, plus on the first image a car box at score .9
    lying wholly in its ignored region (60,5,30,20 in the annotation: x 60..90, y 5..25)."""

    tasks = ("detection",)
    class_names = {"detection": list(VISDRONE_CLASSES)}

    def __init__(self, dataset):
        self.answers = {}
        for index in range(len(dataset)):
            image, target = dataset[index]
            boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
            scores = np.full(len(boxes), 0.5)
            if target["image_id"] == FIRST:
                boxes = np.concatenate([boxes, [[62.0, 7.0, 88.0, 23.0]]])
                labels = np.concatenate([labels, [VISDRONE_CLASSES.index("car")]])
                scores = np.concatenate([scores, [0.9]])
            self.answers[image.permute(1, 2, 0).numpy().tobytes()] = (boxes, scores, labels)

    def predict(self, image):
        boxes, scores, labels = self.answers[image.tobytes()]
        return SimpleNamespace(mask=None, boxes=boxes, scores=scores, labels=labels,
                               timings=StageTimings(total_ms=1.0))


def test_visdrone_ignored_regions_reach_evaluation(tmp_path):
    root = write_visdrone(tmp_path / "VisDrone2019-DET-val")
    with_regions = VisDroneDetection(root)
    assert "ignore_mask" in with_regions[0][1]
    stub = VisDroneAnswers(with_regions)
    # Pedestrian, car and truck (image 1), motor and bus (image 2) have ground truth; each is found.
    result = evaluate(stub, with_regions, progress=False)
    assert result["det_voc_ap50"] == 1.0 and result["det_coco_map"] == pytest.approx(1.0)
    assert (result["det_num_detections"], result["det_num_ignored_detections"]) == (5, 1)
    # Without the regions the .9 car box is a false positive ahead of the hit: car AP 1/2,
    # the other four 1, mean (4 + 1/2) / 5.
    without = evaluate(stub, VisDroneDetection(root, ignored_regions="drop"), progress=False)
    assert without["det_per_class_ap50"]["car"] == 0.5
    assert without["det_voc_ap50"] == pytest.approx(4.5 / 5)
    assert without["det_num_ignored_detections"] == 0
