"""COCO-JSON detection reader."""

import json

import numpy as np
import pytest
from PIL import Image

from mtl_perception.data.coco import CocoDetection
from mtl_perception.data.errors import DatasetFormatError


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / name)
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 50, "height": 40},
                   {"id": 8, "file_name": "b.jpg", "width": 50, "height": 40},
                   {"id": 9, "file_name": "c.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20, 5, 15, 10], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 50, 40], "iscrowd": 1},
            {"id": 4, "image_id": 8, "category_id": 1, "bbox": [5, 5, 0, 4], "iscrowd": 0},  # no area
        ],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return images, ann, data


def test_boxes_labels_and_crowd_skipped(coco):
    images, ann, _ = coco
    dataset = CocoDetection(images, ann)
    assert dataset.det_classes == ("person", "car")  # ordered by category id
    assert len(dataset) == 3
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 40, 50)
    assert target["image_id"] == "7" and set(target) == {"image_id", "boxes", "labels"}
    assert target["boxes"].tolist() == [[2, 3, 12, 23], [20, 5, 35, 15]]
    assert target["labels"].tolist() == [0, 1]
    assert dataset[1][1]["boxes"].shape == (0, 4)  # degenerate box dropped; image kept as empty


def test_crowd_as_difficult_and_skip_empty(coco):
    images, ann, _ = coco
    dataset = CocoDetection(images, ann, crowd="difficult", skip_empty=True)
    assert len(dataset) == 1
    target = dataset[0][1]
    assert target["labels"].tolist() == [0, 1, 1]
    assert target["difficult"].tolist() == [False, False, True]


def test_remap_to_model_classes(coco):
    images, ann, _ = coco
    dataset = CocoDetection(images, ann, class_map={"detection": ["person", "car"], "rename": {"car": "vehicle"}},
                            det_classes=["vehicle"])
    assert dataset[0][1]["labels"].tolist() == [0]
    assert dataset[0][1]["boxes"].tolist() == [[20, 5, 35, 15]]


def test_errors(coco, tmp_path):
    images, ann, data = coco
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="broken.json: invalid JSON"):
        CocoDetection(images, broken)
    broken.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetFormatError, match="missing list 'annotations'"):
        CocoDetection(images, broken)
    data["annotations"][0]["bbox"] = [1, 2, 3]
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="annotation #0 bbox must be"):
        CocoDetection(images, broken)
    data["annotations"][0]["bbox"] = [1, 2, 3, 4]
    data["annotations"][0]["category_id"] = 99
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="unknown category_id 99"):
        CocoDetection(images, broken)
    (images / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="b.jpg"):
        CocoDetection(images, ann)
    with pytest.raises(DatasetFormatError, match="not in class map"):
        CocoDetection(images, ann, class_map={"detection": ["person"]})
