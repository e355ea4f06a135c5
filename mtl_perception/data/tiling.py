"""Cutting large images (and their boxes / masks) into fixed-size tiles."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .base import LabelledImageDataset, JointTransformFn, Sample
from .errors import CorruptImageError

log = logging.getLogger(__name__)


EDGE_MODES = ("shift", "partial")


def tile_starts(start: int, stop: int, tile: int, stride: int, edge: str = "shift") -> list[int]:
    """Tile origins covering ``[start, stop)`` every ``stride`` pixels.

    Where the stride does not land on ``stop``, ``edge='shift'`` adds a last full tile flush with
    ``stop`` (overlapping its neighbour); ``edge='partial'`` adds a tile cut short at ``stop``,
    or nothing when that remnant is under half a tile. A range shorter than ``tile`` gives
    one origin (the tile is then cut short).
    """
    if edge not in EDGE_MODES:
        raise ValueError(f"edge must be one of {EDGE_MODES}, got {edge!r}")
    if stop - start <= tile:
        return [start]
    starts = list(range(start, stop - tile + 1, stride))
    remnant = stop - (starts[-1] + tile)
    if remnant > 0:
        if edge == "shift":
            starts.append(stop - tile)
        elif stop - (starts[-1] + stride) >= tile / 2:
            starts.append(starts[-1] + stride)
    return starts


class TiledDataset(LabelledImageDataset):
    """Tiles of every sample of ``base``.

    Boxes are clipped to the tile; a clipped box is kept only if at least
    ``min_box_visibility`` of its area and ``min_box_size`` pixels of width and height remain.
    Masks (``mask``, ``ignore_mask``) are cropped with the image. Tile ids are ``'<base id>@y<top>_x<left>'``.

    Args:
        base: the dataset to tile (its own ``transforms`` must be None).
        tile_size: (H, W) or a single int.
        stride: (H, W) step between tiles (default ``tile_size``: no overlap).
        edge: ``'shift'`` (last tiles flush with the border, overlapping; for training) or
            ``'partial'`` (no overlap, so no object is counted twice; for evaluation): see
            :func:`tile_starts`.
        region: ``(top, left, bottom, right)`` pixel window of each base image to tile (clipped to
            the image), e.g. to keep train and held-out tiles of one large image apart.
        min_box_visibility: fraction of a box's area that must stay inside a tile.
        min_box_size: minimal clipped box width and height in pixels.
        drop_empty: leave out tiles without boxes (only for detection-labelled samples).
        cache_size: decoded base samples kept in memory (tiles of one image are consecutive).
        transforms: joint transform applied to each tile.
    """

    def __init__(
        self,
        base: LabelledImageDataset,
        tile_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        edge: str = "shift",
        region: Sequence[int] | None = None,
        min_box_visibility: float = 0.5,
        min_box_size: float = 2.0,
        drop_empty: bool = False,
        cache_size: int = 4,
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        if getattr(base, "transforms", None) is not None:
            raise ValueError("TiledDataset: give the transforms to the tiled dataset, not to the base dataset")
        self.tile_size = _pair(tile_size, "tile_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.tile_size
        if region is not None and len(region) != 4:
            raise ValueError(f"region must be (top, left, bottom, right), got {region!r}")
        self.base = base
        self.region = tuple(region) if region is not None else None
        self.min_box_visibility = min_box_visibility
        self.min_box_size = min_box_size
        self._cache: OrderedDict[int, Sample] = OrderedDict()
        self._cache_size = max(cache_size, 1)
        self.tiles: list[tuple[int, int, int, int, int]] = []  # base index, top, left, height, width
        for base_index in range(len(base)):
            try:
                height, width = base.image_size(base_index)
            except CorruptImageError as err:
                log.warning("TiledDataset: skipping base sample %d, %s", base_index, err)
                continue
            top, left, bottom, right = self.region if self.region else (0, 0, height, width)
            top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
            if bottom <= top or right <= left:
                continue
            for y in tile_starts(top, bottom, self.tile_size[0], self.stride[0], edge):
                for x in tile_starts(left, right, self.tile_size[1], self.stride[1], edge):
                    tile_h, tile_w = min(self.tile_size[0], bottom - y), min(self.tile_size[1], right - x)
                    self.tiles.append((base_index, y, x, tile_h, tile_w))
        if drop_empty:
            self.tiles = [t for t in self.tiles if self._has_boxes(t)]
        if not self.tiles:
            raise ValueError(f"TiledDataset: no tiles (region {self.region}, tile {self.tile_size})")

    def _base_sample(self, base_index: int) -> Sample:
        if base_index in self._cache:
            self._cache.move_to_end(base_index)
            return self._cache[base_index]
        sample = self.base.load_sample(base_index)
        self._cache[base_index] = sample
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return sample

    def _has_boxes(self, tile: tuple[int, int, int, int, int]) -> bool:
        try:
            target = self._crop(tile)[1]
        except CorruptImageError:
            return False
        return "boxes" in target and len(target["boxes"]) > 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self.tiles)

    def image_size(self, index: int) -> tuple[int, int]:
        return self.tiles[index][3], self.tiles[index][4]

    def _crop(self, tile: tuple[int, int, int, int, int]) -> Sample:
        base_index, top, left, height, width = tile
        image, target = self._base_sample(base_index)
        out = {"image_id": f"{target['image_id']}@y{top}_x{left}"}
        for key, value in target.items():
            if isinstance(value, tv_tensors.Mask):  # the label mask, VisDrone's ignore_mask
                out[key] = F.crop(value, top, left, height, width)
        if "boxes" in target:
            boxes = target["boxes"]
            area_before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            cropped = F.crop(boxes, top, left, height, width)
            box_w, box_h = cropped[:, 2] - cropped[:, 0], cropped[:, 3] - cropped[:, 1]
            visible = box_w * box_h >= self.min_box_visibility * area_before
            keep = visible & (box_w >= self.min_box_size) & (box_h >= self.min_box_size) & (area_before > 0)
            out["boxes"] = tv_tensors.wrap(cropped[keep], like=cropped)
            for key in ("labels", "difficult"):
                if key in target:
                    out[key] = target[key][keep]
        for key, value in target.items():
            out.setdefault(key, value)
        return F.crop(image, top, left, height, width), out

    def load_sample(self, index: int) -> Sample:
        return self._crop(self.tiles[index])


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (H, W), got {value!r}")
    return pair  # type: ignore[return-value]


__all__ = ["EDGE_MODES", "TiledDataset", "tile_starts"]
