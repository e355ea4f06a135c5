"""UAVid (colour labels in seqN/Labels beside seqN/Images) and the Semantic Drone Dataset (grey
index labels, 24 classes) through the segmentation-folder reader, tiled like their large frames."""

import logging

import numpy as np
import pytest
from PIL import Image

from dataset_fixtures import REPO_ROOT, class_map_yaml, noise_image, write_semantic_drone, write_uavid
from mtl_perception.data.build import build_dataset

UAVID_MODEL_CLASSES = ["background", "building", "road", "tree", "low_vegetation", "car", "human"]
# uavid.yaml order: clutter, building, road, tree, low_vegetation, moving_car, static_car, human
UAVID_TO_MODEL = np.array([0, 1, 2, 3, 4, 5, 5, 6], dtype=np.uint8)
# The official UAVid colours (UAVidToolKit colorTransformer.py), under uavid.yaml's class names.
UAVID_COLOURS = {"clutter": (0, 0, 0), "building": (128, 0, 0), "road": (128, 64, 128), "tree": (0, 128, 0),
                 "low_vegetation": (128, 128, 0), "moving_car": (64, 0, 128), "static_car": (192, 0, 192),
                 "human": (64, 64, 0)}
UAVID_RENAME = {"clutter": "background", "moving_car": "car", "static_car": "car"}

# class_dict_seg.csv of the Semantic Drone Dataset as released (sources in semantic_drone.yaml).
SEMANTIC_DRONE_CLASS_DICT = """\
name, r, g, b
unlabeled, 0, 0, 0
paved-area, 128, 64, 128
dirt, 130, 76, 0
grass, 0, 102, 0
gravel, 112, 103, 87
water, 28, 42, 168
rocks, 48, 41, 30
pool, 0, 50, 89
vegetation, 107, 142, 35
roof, 70, 70, 70
wall, 102, 102, 156
window, 254, 228, 12
door, 254, 148, 12
fence, 190, 153, 153
fence-pole, 153, 153, 153
person, 255, 22, 96
dog, 102, 51, 0
car, 9, 143, 150
bicycle, 119, 11, 32
tree, 51, 51, 0
bald-tree, 190, 250, 190
ar-marker, 112, 150, 146
obstacle, 2, 135, 115
conflicting, 255, 0, 0
"""


def semantic_drone_class_dict():
    """[(name, (r, g, b))] in file order: row k is grey value k of label_images_semantic."""
    rows = [line.split(",") for line in SEMANTIC_DRONE_CLASS_DICT.splitlines()[1:]]
    return [(name.strip(), tuple(int(v) for v in rgb)) for name, *rgb in rows]


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


def test_uavid_class_map_has_the_official_colours(tmp_path):
    class_map = class_map_yaml("uavid")
    assert {name: tuple(rgb) for name, rgb in zip(class_map["segmentation"], class_map["palette"])} == UAVID_COLOURS
    # A label PNG painted with the official colours (one class per 5-column stripe) decodes by name.
    names = list(UAVID_COLOURS)
    stripes = np.broadcast_to(np.arange(40) // 5, (8, 40))
    colours = np.array([UAVID_COLOURS[name] for name in names], dtype=np.uint8)
    (tmp_path / "seq1" / "Images").mkdir(parents=True)
    (tmp_path / "seq1" / "Labels").mkdir()
    Image.fromarray(noise_image(8, 40, 0)).save(tmp_path / "seq1" / "Images" / "000000.png")
    Image.fromarray(colours[stripes]).save(tmp_path / "seq1" / "Labels" / "000000.png")
    mask = build_dataset(uavid_config(tmp_path))[0][1]["mask"].numpy()
    expected = [UAVID_MODEL_CLASSES.index(UAVID_RENAME.get(name, name)) for name in names]
    assert mask[0, ::5].tolist() == expected == [0, 1, 2, 3, 4, 5, 5, 6]
    assert np.array_equal(mask, np.array(expected, dtype=np.uint8)[stripes])


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


def test_semantic_drone_class_map_is_the_release_class_dict():
    class_map = class_map_yaml("semantic_drone")
    names, colours = zip(*semantic_drone_class_dict())
    assert len(names) == 24 and names[0] == "unlabeled"
    assert tuple(class_map["segmentation"]) == names
    assert [tuple(rgb) for rgb in class_map["palette"]] == list(colours)


def test_semantic_drone_colour_masks_decode_through_the_class_map(tmp_path):
    """RGB_color_image_masks/*.png, painted from class_dict_seg.csv, give the classes of the grey masks."""
    root = tmp_path / "semantic_drone"
    (root / "original_images").mkdir(parents=True)
    (root / "RGB_color_image_masks").mkdir()
    grey = np.broadcast_to(np.arange(48) // 2, (6, 48)).astype(np.uint8)  # every class, 2 columns each
    colours = np.array([rgb for _, rgb in semantic_drone_class_dict()], dtype=np.uint8)
    Image.fromarray(noise_image(6, 48, 0)).save(root / "original_images" / "000.jpg")
    Image.fromarray(colours[grey]).save(root / "RGB_color_image_masks" / "000.png")
    model_classes = [name for name, _ in semantic_drone_class_dict()][1:]
    dataset = build_dataset({
        "type": "seg_folder", "image_dir": str(root / "original_images"),
        "mask_dir": str(root / "RGB_color_image_masks"), "mask_format": "color",
        "class_map": str(REPO_ROOT / "config/datasets/semantic_drone.yaml"), "seg_classes": model_classes})
    mask = dataset[0][1]["mask"].numpy()
    # Grey value k is model class k - 1; unlabeled (0) is ignored (255).
    assert mask[0, ::2].tolist() == [255, *range(23)]
    assert np.array_equal(mask, np.where(grey == 0, 255, grey.astype(np.int64) - 1).astype(np.uint8))
