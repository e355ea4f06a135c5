"""UAVid (colour labels in seqN/Labels beside seqN/Images) and the Semantic Drone Dataset (grey
index labels, 24 classes) through the segmentation-folder reader, tiled like their large frames."""

import logging

import numpy as np
import pytest

from dataset_fixtures import REPO_ROOT, class_map_yaml, write_semantic_drone, write_uavid
from mtl_perception.data.build import build_dataset

UAVID_MODEL_CLASSES = ["background", "building", "road", "tree", "low_vegetation", "car", "human"]
# uavid.yaml order: clutter, building, road, tree, low_vegetation, moving_car, static_car, human
UAVID_TO_MODEL = np.array([0, 1, 2, 3, 4, 5, 5, 6], dtype=np.uint8)


def uavid_config(root, **extra):
    return {"type": "seg_folder", "image_dir": str(root), "mask_dir": str(root), "image_folder": "Images",
            "mask_folder": "Labels", "mask_format": "color", "class_map": str(REPO_ROOT / "config/datasets/uavid.yaml"),
            "seg_classes": UAVID_MODEL_CLASSES, **extra}


def test_uavid_colour_labels_map_to_the_model_classes_tile_by_tile(tmp_path):
    written = write_uavid(tmp_path / "uavid_train")
    tiles = build_dataset(uavid_config(tmp_path / "uavid_train", tile={"size": [12, 20]}))
    assert len(tiles) == 2 * 4  # two 24x40 frames, 2 x 2 tiles each
    for index in range(len(tiles)):
        image, target = tiles[index]
        frame_id, _, origin = target["image_id"].partition("@")
        top, left = (int(part[1:]) for part in origin.split("_"))
        expected = UAVID_TO_MODEL[written[frame_id][top:top + 12, left:left + 20]]
        assert tuple(image.shape) == (3, 12, 20)
        assert np.array_equal(target["mask"].numpy(), expected), target["image_id"]
    # Both car classes became "car" (5), and every model class occurs.
    full = build_dataset(uavid_config(tmp_path / "uavid_train"))
    assert full.seg_classes == tuple(UAVID_MODEL_CLASSES)
    assert set(np.unique(full[0][1]["mask"].numpy())) == set(range(7))


def test_uavid_missing_and_corrupt_labels(tmp_path, caplog):
    root = tmp_path / "uavid_train"
    write_uavid(root)
    (root / "seq2" / "Labels" / "000000.png").write_bytes(b"\x89PNG broken")
    dataset = build_dataset(uavid_config(root))
    with caplog.at_level(logging.WARNING):
        ids = [dataset[i][1]["image_id"] for i in range(len(dataset))]
    assert ids == ["seq1/Images/000000", "seq1/Images/000000"]  # the corrupt pair is skipped
    assert "seq2/Labels/000000.png" in caplog.text
    (root / "seq2" / "Labels" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match="mask of .*seq2/Images/000000.png not found: .*seq2/Labels/000000.png"):
        build_dataset(uavid_config(root))
    with pytest.raises(ValueError, match="image_folder and mask_folder together"):
        build_dataset({**uavid_config(root), "mask_folder": None})


def test_semantic_drone_index_labels_with_unlabeled_ignored_and_tiles(tmp_path):
    written = write_semantic_drone(tmp_path / "semantic_drone_dataset")
    class_map = REPO_ROOT / "config/datasets/semantic_drone.yaml"
    model_classes = class_map_yaml("semantic_drone")["segmentation"][1:]  # everything but "unlabeled"
    assert len(model_classes) == 23
    tiles = build_dataset({
        "type": "seg_folder", "image_dir": str(tmp_path / "semantic_drone_dataset/original_images"),
        "mask_dir": str(tmp_path / "semantic_drone_dataset/label_images_semantic"), "class_map": str(class_map),
        "seg_classes": model_classes, "tile": {"size": [20, 30]}})
    assert len(tiles) == 2 * 4
    image, target = tiles[1]  # frame 000, top-right tile
    assert target["image_id"] == "000@y0_x30" and tuple(image.shape) == (3, 20, 30)
    source = written["000"][0:20, 30:60]
    expected = np.where(source == 0, 255, source.astype(np.int64) - 1).astype(np.uint8)
    assert np.array_equal(target["mask"].numpy(), expected)
    assert (target["mask"].numpy() == 255).any()  # rows of "unlabeled" are ignored
