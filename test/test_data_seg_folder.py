"""Segmentation folders with index and colour masks, and pairs files."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from mtl_perception.data.seg_folder import SegmentationFolder

UAVID_LIKE = {
    "name": "tiny",
    "segmentation": ["clutter", "building", "road", "moving_car", "static_car"],
    "palette": [[0, 0, 0], [128, 0, 0], [128, 64, 128], [64, 0, 128], [192, 0, 192]],
    "ignore_colors": [[255, 255, 255]],
    "rename": {"clutter": "background", "moving_car": "car", "static_car": "car"},
}
H, W = 20, 30


def index_mask(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, size=(H, W)).astype(np.uint8)


def to_colors(mask):
    palette = np.array(UAVID_LIKE["palette"], dtype=np.uint8)
    return palette[mask]


@pytest.fixture
def folders(tmp_path):
    images, index_masks, color_masks = tmp_path / "images", tmp_path / "index", tmp_path / "color"
    for seq in ("seq1", "seq2"):
        for d in (images, index_masks, color_masks):
            (d / seq).mkdir(parents=True)
    for k, rel in enumerate(["seq1/000000", "seq1/000010", "seq2/000000"]):
        Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(images / f"{rel}.png")
        mask = index_mask(k)
        palette_png = Image.fromarray(mask, mode="P")
        palette_png.putpalette(sum(UAVID_LIKE["palette"], []) + [0] * (768 - 15))
        palette_png.save(index_masks / f"{rel}.png")
        Image.fromarray(to_colors(mask)).save(color_masks / f"{rel}.png")
    return tmp_path


def test_index_masks_pair_by_relative_path(folders):
    dataset = SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE)
    assert len(dataset) == 3
    assert dataset.seg_classes == ("background", "building", "road", "car")
    image, target = dataset[1]
    assert set(target) == {"image_id", "mask"} and target["image_id"] == "seq1/000010"
    assert isinstance(image, tv_tensors.Image) and int(image[0, 0, 0]) == 40
    assert isinstance(target["mask"], tv_tensors.Mask)
    expected = np.array([0, 1, 2, 3, 3], dtype=np.uint8)[index_mask(1)]  # both car classes -> 3
    assert np.array_equal(target["mask"].numpy(), expected)


def test_colour_masks_give_the_same_indices(folders):
    by_index = SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE)
    by_color = SegmentationFolder(folders / "images", folders / "color", UAVID_LIKE, mask_format="color")
    for i in range(3):
        assert torch.equal(by_index[i][1]["mask"], by_color[i][1]["mask"])


def test_unknown_and_ignore_colours_become_255(folders, caplog):
    path = folders / "color/seq2/000000.png"
    colors = to_colors(index_mask(2))
    colors[0, :5] = (255, 255, 255)  # ignore colour
    colors[1, :3] = (1, 2, 3)  # not in the palette
    Image.fromarray(colors).save(path)
    dataset = SegmentationFolder(folders / "images", folders / "color", UAVID_LIKE)
    with caplog.at_level(logging.WARNING):
        mask = dataset[2][1]["mask"]
    assert (mask[0, :5] == 255).all() and (mask[1, :3] == 255).all()
    assert int((mask == 255).sum()) == 8
    assert any("(1, 2, 3)" in r.getMessage() and "000000.png" in r.getMessage() for r in caplog.records)


def test_model_class_subset_and_background_fallback(folders):
    ignore = SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE, seg_classes=["background", "car"])
    background = SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE,
                                    seg_classes=["background", "car"], unmapped_mask="background")
    raw = index_mask(0)
    assert np.array_equal(ignore[0][1]["mask"].numpy(), np.array([0, 255, 255, 1, 1], np.uint8)[raw])
    assert np.array_equal(background[0][1]["mask"].numpy(), np.array([0, 0, 0, 1, 1], np.uint8)[raw])


def test_ids_select_and_pairs_file(folders):
    subset = SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE, ids=["seq2/000000"])
    assert len(subset) == 1 and subset[0][1]["image_id"] == "seq2/000000"
    pairs = folders / "pairs.txt"
    pairs.write_text("# image mask\nimages/seq1/000010.png color/seq1/000010.png\n")
    from_pairs = SegmentationFolder.from_pairs_file(pairs, UAVID_LIKE)
    assert len(from_pairs) == 1 and from_pairs[0][1]["image_id"] == "images/seq1/000010"
    assert torch.equal(from_pairs[0][1]["mask"], subset_mask(folders, "seq1/000010"))


def subset_mask(folders, rel):
    return SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE, ids=[rel])[0][1]["mask"]


def test_errors_name_the_problem(folders, tmp_path):
    (folders / "index/seq1/000010.png").unlink()
    with pytest.raises(FileNotFoundError, match="mask of .*000010.png"):
        SegmentationFolder(folders / "images", folders / "index", UAVID_LIKE)
    with pytest.raises(FileNotFoundError, match="listed images not found"):
        SegmentationFolder(folders / "images", folders / "color", UAVID_LIKE, ids=["seq9/1"])
    bad_pairs = tmp_path / "bad.txt"
    bad_pairs.write_text("only_one_column.png\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected 'image_path mask_path'"):
        SegmentationFolder.from_pairs_file(bad_pairs, UAVID_LIKE)
    with pytest.raises(ValueError, match="no palette"):
        SegmentationFolder(folders / "images", folders / "color", {"segmentation": ["a", "b"]}, mask_format="color")


def test_colour_mask_for_index_only_dataset_is_skipped(folders, caplog):
    dataset = SegmentationFolder(folders / "images", folders / "color", UAVID_LIKE, mask_format="index")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RuntimeError, match="no sample could be decoded"):
            dataset[0]
    assert any("expected an index" in r.getMessage() for r in caplog.records)
