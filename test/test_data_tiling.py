"""Tiling wrapper: tile grid, clipped boxes, dropped remnants, cropped masks."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from mtl_perception.data.base import LabelledImageDataset, detection_fields, mask_field
from mtl_perception.data.tiling import TiledDataset, tile_starts

H, W = 100, 130


class OneImage(LabelledImageDataset):
    """A 100x130 image whose mask marks each box with label+1."""

    def __init__(self, boxes, with_mask=True, with_boxes=True):
        super().__init__()
        self.boxes, self.with_mask, self.with_boxes = boxes, with_mask, with_boxes

    def __len__(self):
        return 1

    def load_sample(self, index):
        image = torch.arange(H * W, dtype=torch.int64).reshape(1, H, W).remainder(251).to(torch.uint8).repeat(3, 1, 1)
        mask = np.zeros((H, W), np.uint8)
        for label, (x0, y0, x1, y1) in enumerate(self.boxes):
            mask[y0:y1, x0:x1] = label + 1
        target = {"image_id": "big"}
        if self.with_boxes:
            target.update(detection_fields(np.array(self.boxes).reshape(-1, 4), np.arange(len(self.boxes)),
                                           (H, W), difficult=np.arange(len(self.boxes)) == 1))
        if self.with_mask:
            target["mask"] = mask_field(mask)
        return tv_tensors.Image(image), target


def test_tile_starts_shift_and_partial():
    assert tile_starts(0, 130, 50, 50) == [0, 50, 80]
    assert tile_starts(0, 130, 50, 50, edge="partial") == [0, 50, 100]
    assert tile_starts(0, 110, 50, 50, edge="partial") == [0, 50]  # a 10 px remnant is dropped
    assert tile_starts(0, 100, 50, 50) == [0, 50]
    assert tile_starts(0, 30, 50, 50) == [0]
    assert tile_starts(600, 900, 300, 150) == [600]
    assert tile_starts(0, 600, 300, 150) == [0, 150, 300]
    with pytest.raises(ValueError, match="edge"):
        tile_starts(0, 10, 5, 5, edge="wrap")


def test_tiles_crop_image_mask_and_boxes_together():
    boxes = [(5, 5, 20, 30), (40, 10, 70, 30), (95, 60, 125, 95)]
    tiled = TiledDataset(OneImage(boxes), tile_size=50)
    assert [t[1:] for t in tiled.tiles] == [
        (0, 0, 50, 50), (0, 50, 50, 50), (0, 80, 50, 50), (50, 0, 50, 50), (50, 50, 50, 50), (50, 80, 50, 50)
    ]
    base_image, base_target = OneImage(boxes).load_sample(0)
    for index, (_, top, left, height, width) in enumerate(tiled.tiles):
        image, target = tiled[index]
        assert target["image_id"] == f"big@y{top}_x{left}"
        assert torch.equal(image, base_image[:, top : top + height, left : left + width])
        assert torch.equal(target["mask"], base_target["mask"][top : top + height, left : left + width])
        assert tuple(target["boxes"].canvas_size) == (height, width)
        assert len(target["boxes"]) == len(target["labels"]) == len(target["difficult"])
        for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            ys, xs = np.nonzero(target["mask"].numpy() == label + 1)
            assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (y0, y1, x0, x1)
    first = tiled[0][1]
    # box 1 (40..70) keeps 10 of 30 px in tile 0: under half its area, dropped there.
    assert first["boxes"].tolist() == [[5, 5, 20, 30]] and first["labels"].tolist() == [0]
    second = tiled[1][1]  # tile x 50..100: box 1 keeps 20/30 of its width
    assert second["boxes"].tolist() == [[0, 10, 20, 30]] and second["difficult"].tolist() == [True]
    last = tiled[5][1]  # tile y 50..100, x 80..130 holds all of box 2
    assert last["boxes"].tolist() == [[15, 10, 45, 45]] and last["labels"].tolist() == [2]


def test_visibility_and_size_thresholds():
    boxes = [(45, 5, 75, 30)]  # 5 of 30 px inside tile 0
    keep_all = TiledDataset(OneImage(boxes), tile_size=50, min_box_visibility=0.1)
    assert keep_all[0][1]["boxes"].tolist() == [[45, 5, 50, 30]]
    strict = TiledDataset(OneImage(boxes), tile_size=50, min_box_visibility=0.1, min_box_size=6)
    assert strict[0][1]["boxes"].shape == (0, 4)


def test_region_limits_tiles_and_drop_empty():
    boxes = [(5, 5, 20, 30)]
    top_half = TiledDataset(OneImage(boxes), tile_size=(25, 65), region=(0, 0, 50, 130))
    assert all(t[1] + t[3] <= 50 for t in top_half.tiles) and len(top_half) == 4
    bottom = TiledDataset(OneImage(boxes), tile_size=(25, 65), region=(50, 0, 100, 130))
    assert all(t[1] >= 50 for t in bottom.tiles)
    only_objects = TiledDataset(OneImage(boxes), tile_size=50, drop_empty=True)
    assert len(only_objects) == 1


def test_segmentation_only_base_and_transforms_placement():
    tiled = TiledDataset(OneImage([(5, 5, 20, 30)], with_boxes=False), tile_size=50)
    assert set(tiled[0][1]) == {"image_id", "mask"}
    base = OneImage([])
    base.transforms = lambda image, target: (image, target)
    with pytest.raises(ValueError, match="not to the base dataset"):
        TiledDataset(base, tile_size=50)
    with pytest.raises(ValueError, match="tile_size"):
        TiledDataset(OneImage([]), tile_size=0)
