"""VisDrone2019-DET reader on a tiny release-format folder, and its ignored regions in the SSD loss."""

import logging
import math

import numpy as np
import pytest
import torch

from dataset_fixtures import VISDRONE_LINES, write_visdrone
from mtl_perception.data.build import build_dataset
from mtl_perception.data.errors import DatasetFormatError
from mtl_perception.data.visdrone import VISDRONE_CLASSES, VisDroneDetection
from mtl_perception.losses import ignored_anchors, multibox_loss

FIRST, SECOND = VISDRONE_LINES


@pytest.fixture
def visdrone_root(tmp_path):
    return write_visdrone(tmp_path / "VisDrone2019-DET-train")


def test_boxes_classes_and_ignored_regions_in_release_format(visdrone_root):
    dataset = VisDroneDetection(visdrone_root)
    assert dataset.det_classes == VISDRONE_CLASSES and len(dataset) == 2
    image, target = dataset[0]
    assert target["image_id"] == FIRST and tuple(image.shape) == (3, 60, 96)
    # left,top,width,height -> XYXY; "others" (11) dropped; category k -> label k - 1.
    assert target["boxes"].tolist() == [[10, 12, 30, 28], [40, 30, 48, 44], [70, 40, 82, 48]]
    assert target["labels"].tolist() == [3, 0, 5]  # car, pedestrian, truck
    ignored = target["ignore_mask"].numpy()
    expected = np.zeros((60, 96), np.uint8)
    expected[5:25, 60:90] = 1  # the category-0 region 60,5,30,20
    assert np.array_equal(ignored, expected)
    second = dataset[1][1]
    assert second["boxes"].tolist() == [[0, 0, 16, 12], [30, 20, 54, 38]]
    assert second["labels"].tolist() == [9, 8] and "ignore_mask" not in second


def test_truncation_occlusion_filters_others_and_dropping_ignored_regions(visdrone_root):
    assert VisDroneDetection(visdrone_root, max_occlusion=1)[0][1]["labels"].tolist() == [3, 0]
    assert VisDroneDetection(visdrone_root, max_occlusion=0)[0][1]["labels"].tolist() == [3]
    assert VisDroneDetection(visdrone_root, max_truncation=0)[0][1]["labels"].tolist() == [3, 0]
    with_others = VisDroneDetection(visdrone_root, det_classes=[*VISDRONE_CLASSES, "others"])[0][1]
    assert with_others["labels"].tolist() == [3, 0, 10, 5]
    assert "ignore_mask" not in VisDroneDetection(visdrone_root, ignored_regions="drop")[0][1]


@pytest.mark.parametrize("line, why", [
    ("1,2,3,4,1,4,0", "expected 8 comma-separated fields"),
    ("1,2,x,4,1,4,0,0", "non-integer field"),
    ("1,2,3,4,1,12,0,0", "object_category 12 not in 0..11"),
    ("1,2,3,4,1,4,0,3", "occlusion 0..2"),
    ("1,2,-3,4,1,4,0,0", "negative box size"),
])
def test_malformed_lines_name_file_and_line(visdrone_root, line, why):
    path = visdrone_root / "annotations" / f"{SECOND}.txt"
    path.write_text(f"0,0,16,12,1,10,0,0\n{line}\n")
    with pytest.raises(DatasetFormatError, match=rf"{path}:2: .*{why}"):
        VisDroneDetection(visdrone_root)


def test_missing_annotation_and_corrupt_image(visdrone_root, caplog):
    (visdrone_root / "images" / f"{FIRST}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    dataset = VisDroneDetection(visdrone_root)
    with caplog.at_level(logging.WARNING):
        _, target = dataset[0]
    assert target["image_id"] == SECOND  # the corrupt one is reported and skipped
    assert f"{FIRST}.jpg" in caplog.text
    (visdrone_root / "annotations" / f"{SECOND}.txt").unlink()
    with pytest.raises(FileNotFoundError, match=f"VisDrone annotation file not found: .*{SECOND}.txt"):
        VisDroneDetection(visdrone_root)


def test_tiles_crop_the_ignore_mask_with_the_image(visdrone_root):
    tiles = build_dataset({"type": "visdrone", "root": str(visdrone_root), "tile": {"size": [30, 48]}})
    by_id = {tiles[i][1]["image_id"]: tiles[i][1] for i in range(len(tiles))}
    region = by_id[f"{FIRST}@y0_x48"]["ignore_mask"].numpy()
    expected = np.zeros((30, 48), np.uint8)
    expected[5:25, 12:42] = 1  # columns 60..90 of the frame are 12..42 of the tile at x = 48
    assert np.array_equal(region, expected)
    assert by_id[f"{FIRST}@y30_x0"]["ignore_mask"].sum() == 0


def test_anchors_mostly_inside_ignored_regions_are_neither_positive_nor_negative():
    region = torch.zeros(64, 64, dtype=torch.uint8)
    region[0:10, 0:10] = 1
    region[30:, 30:] = 255  # padding value: not an ignored region
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],    # inside
        [20.0, 0.0, 30.0, 10.0],   # outside
        [0.0, 0.0, 10.0, 20.0],    # half inside: 100 of 200 px
        [40.0, 40.0, 50.0, 50.0],  # matches the box
        [-10.0, 0.0, 10.0, 10.0],  # half beyond the image: 100 of 200 px inside the region
        [0.0, 0.0, 10.0, 21.0],    # 100 of 210 px: under half
    ])
    assert ignored_anchors(anchors, region).tolist() == [True, False, True, False, True, False]
    # Background CE of each anchor: log(1 + e^z) for logits (0, z); the positive has log 2.
    z = torch.tensor([5.0, 1.0, 3.0, 0.0, 4.0, 2.0])
    cls_logits = torch.stack([torch.zeros(6), z], dim=1)[None]
    bbox_regression = torch.zeros(1, 6, 4)
    target = {"boxes": torch.tensor([[40.0, 40.0, 50.0, 50.0]]), "labels": torch.tensor([0])}
    plain = multibox_loss(cls_logits, bbox_regression, anchors, [target], neg_pos_ratio=3)
    # 3 hard negatives per positive: the three largest losses, anchors 0 (z=5), 4 (z=4), 2 (z=3).
    softplus = [math.log1p(math.exp(v)) for v in (5.0, 4.0, 3.0)]
    assert float(plain["loss_cls"]) == pytest.approx(math.log(2) + sum(softplus), rel=1e-5)
    ignoring = multibox_loss(cls_logits, bbox_regression, anchors, [{**target, "ignore_mask": region}], neg_pos_ratio=3)
    # Anchors 0, 2 and 4 are ignored: the hard negatives are now 5 (z=2) and 1 (z=1).
    expected = math.log(2) + math.log1p(math.exp(2.0)) + math.log1p(math.exp(1.0))
    assert float(ignoring["loss_cls"]) == pytest.approx(expected, rel=1e-5)
    assert float(ignoring["num_positives"]) == 1 and float(ignoring["loss_box"]) == 0.0
