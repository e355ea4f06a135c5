"""Real aerial sample data shipped in the deepforest and solaris wheels."""

import re

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader

from mtl_perception.data.aerial import (
    DEEPFOREST_HELDOUT, DeepForestTrees, SolarisBuildings, aerial_sample_splits, package_data_dir,
)
from mtl_perception.data.collate import collate_batch
from mtl_perception.data.sampler import InterleavedBatchSampler
from mtl_perception.data.stats import summarize_dataset
from mtl_perception.data.transforms import AugmentationConfig, build_transforms
from mtl_perception.data.voc_xml import parse_voc_xml

TILE = re.compile(r"^(?P<base>.+)@y(?P<y>\d+)_x(?P<x>\d+)$")


@pytest.fixture(scope="module")
def splits():
    return aerial_sample_splits()


def test_package_data_dirs_are_found_without_importing():
    assert (package_data_dir("deepforest", "2.1.0") / "OSBS_029.png").is_file()
    assert (package_data_dir("solaris", "0.2.1") / "sample_geotiff.tif").is_file()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps not_a_package_xyz==1.0"):
        package_data_dir("not_a_package_xyz", "1.0")


def test_deepforest_images_and_boxes():
    dataset = DeepForestTrees()
    assert dataset.det_classes == ("tree",)
    counts = {stem: len(boxes) for stem, _, boxes, _ in dataset.records}
    assert counts == {"2019_YELL_2_528000_4978000_image_crop2": 574, "2019_YELL_2_541000_4977000_image_crop": 279,
                      "OSBS_029": 61, "SOAP_061": 37}
    image, target = dataset[dataset.records.index(next(r for r in dataset.records if r[0] == "OSBS_029"))]
    assert tuple(image.shape) == (3, 400, 400) and image.dtype == torch.uint8
    assert target["labels"].unique().tolist() == [0]
    raw = parse_voc_xml(dataset.data_dir / "OSBS_029.xml")
    assert np.allclose(target["boxes"].numpy(), raw.boxes)


def test_solaris_tile_and_footprints():
    image, target = SolarisBuildings()[0]
    assert tuple(image.shape) == (3, 900, 900) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert 0 < image.float().mean() < 255 and image.float().std() > 20
    mask = target["mask"]
    assert set(target) == {"image_id", "mask"} and torch.unique(mask).tolist() == [0, 1]
    assert 0.035 < (mask == 1).float().mean() < 0.05  # ~4.2 % building pixels


def test_detection_split_holds_out_whole_images(splits):
    train_bases = {TILE.match(t[1]["image_id"])["base"] for t in splits.det_train}
    heldout_bases = {TILE.match(t[1]["image_id"])["base"] for t in splits.det_heldout}
    assert heldout_bases == set(DEEPFOREST_HELDOUT)
    assert train_bases == {"2019_YELL_2_528000_4978000_image_crop2", "SOAP_061"}
    assert len(splits.det_train) == 42 + 1  # 2299x2472 in 400 px tiles (6 x 7) + SOAP_061
    assert len(splits.det_heldout) == 9 + 1  # 1249x1035 without overlap (3 x 3) + OSBS_029


def test_heldout_detection_tiles_do_not_overlap_and_keep_whole_boxes(splits):
    dataset = splits.det_heldout
    crop_tiles = [t for t in dataset.tiles if dataset.base.records[t[0]][0] != "OSBS_029"]
    covered = np.zeros((1035, 1249), dtype=int)
    for _, top, left, height, width in crop_tiles:
        covered[top : top + height, left : left + width] += 1
    assert covered.max() == 1
    raw = next(r for r in dataset.base.records if r[0] == "2019_YELL_2_541000_4977000_image_crop")[2]
    inside_one_tile = sum(
        any(x0 >= left and y0 >= top and x1 <= left + w and y1 <= top + h for _, top, left, h, w in crop_tiles)
        for x0, y0, x1, y1 in raw
    )
    summary = summarize_dataset(dataset)
    assert summary["images"] == 10
    assert summary["boxes"] >= inside_one_tile + 61  # every whole box appears once (+ all of OSBS_029)
    assert summary["boxes"] <= len(raw) + 61


def test_segmentation_split_is_spatially_disjoint(splits):
    train_rows = [int(TILE.match(s[1]["image_id"])["y"]) for s in splits.seg_train]
    heldout_rows = [int(TILE.match(s[1]["image_id"])["y"]) for s in splits.seg_heldout]
    assert len(train_rows) == 15 and len(heldout_rows) == 3
    assert max(train_rows) + 300 <= 600 and min(heldout_rows) >= 600
    train = summarize_dataset(splits.seg_train)
    heldout = summarize_dataset(splits.seg_heldout)
    assert train["seg_images"] == 15 and train["det_images"] == 0
    assert 0.0 < heldout["mask_fraction"][1] < train["mask_fraction"][1] < 0.1


def test_interleaved_real_batches_through_augmentation():
    transforms = build_transforms(AugmentationConfig(input_size=(128, 128)), train=True)
    splits = aerial_sample_splits(train_transforms=transforms)
    dataset = ConcatDataset([splits.det_train, splits.seg_train])
    sampler = InterleavedBatchSampler.from_concat(dataset, [2, 2], seed=0)
    assert len(sampler) == 22  # ceil(43 / 2) steps; buildings cycle
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)
    for step, (images, targets) in enumerate(loader):
        assert tuple(images.shape) == (4, 3, 128, 128) and images.dtype == torch.uint8
        assert ["boxes" in t for t in targets] == [True, True, False, False]
        assert ["mask" in t for t in targets] == [False, False, True, True]
        for t in targets[:2]:
            assert ((t["boxes"] >= 0) & (t["boxes"] <= 128)).all() and t["labels"].eq(0).all()
        if step == 3:
            break
