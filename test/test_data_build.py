"""build_dataset / build_interleaved config factory."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from mtl_perception.data.build import build_dataset, build_interleaved
from mtl_perception.data.coco import CocoDetection
from mtl_perception.data.seg_folder import SegmentationFolder
from mtl_perception.data.tiling import TiledDataset


@pytest.fixture
def coco_cfg(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(images / "a.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                        {"image_id": 1, "category_id": 1, "bbox": [50, 35, 20, 20]}],
    }))
    return {"type": "coco", "image_dir": str(images), "ann_file": str(ann)}


@pytest.fixture
def seg_cfg(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "img/x.png")
    Image.fromarray(np.ones((30, 30), np.uint8)).save(tmp_path / "lbl/x.png")
    class_map = tmp_path / "classes.yaml"
    class_map.write_text(yaml.safe_dump({"segmentation": ["background", "thing"]}))
    return {"type": "seg_folder", "image_dir": str(tmp_path / "img"), "mask_dir": str(tmp_path / "lbl"),
            "class_map": str(class_map)}


def test_builds_each_type_from_plain_dicts(coco_cfg, seg_cfg):
    coco = build_dataset(coco_cfg)
    assert isinstance(coco, CocoDetection) and len(coco[0][1]["boxes"]) == 2
    seg = build_dataset(seg_cfg)
    assert isinstance(seg, SegmentationFolder) and int(seg[0][1]["mask"].sum()) == 900
    trees = build_dataset({"type": "deepforest_trees", "split": "heldout", "tile_size": 400})
    assert len(trees) == 10
    buildings = build_dataset({"type": "solaris_buildings", "split": "train", "tile_size": 300})
    assert len(buildings) == 6


def test_tile_section_wraps_and_transforms_apply_after_tiling(coco_cfg):
    calls = []

    def record(image, target):
        calls.append(tuple(image.shape))
        return image, target

    tiled = build_dataset({**coco_cfg, "tile": {"size": [30, 40], "min_box_visibility": 0.9}}, transforms=record)
    assert isinstance(tiled, TiledDataset) and len(tiled) == 4
    boxes = [tiled[i][1]["boxes"].tolist() for i in range(4)]
    assert boxes == [[[10, 10, 30, 30]], [], [], [[10, 5, 30, 25]]]
    assert calls == [(3, 30, 40)] * 4


def test_unknown_type_and_keys_are_errors(coco_cfg):
    with pytest.raises(ValueError, match="'type' in"):
        build_dataset({"type": "kitti"})
    with pytest.raises(ValueError, match="unknown keys \\['anotation'\\]"):
        build_dataset({**coco_cfg, "anotation": "x"})
    with pytest.raises(ValueError, match="remove 'tile'"):
        build_dataset({"type": "solaris_buildings", "tile": {"size": 100}})
    with pytest.raises(ValueError, match="'tile' must be a mapping with 'size'"):
        build_dataset({**coco_cfg, "tile": {"stride": 10}})
    with pytest.raises(FileNotFoundError, match="COCO annotation file"):
        build_dataset({**coco_cfg, "ann_file": "/nonexistent/ann.json"})


def test_build_interleaved_pairs_sources_with_a_sampler(coco_cfg, seg_cfg):
    dataset, sampler = build_interleaved([coco_cfg, seg_cfg], [1, 1], seed=3)
    assert len(dataset) == 2 and len(sampler) == 1
    assert list(sampler) == [[0, 1]]
