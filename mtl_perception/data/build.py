"""Building datasets from YAML-like config dicts.

``build_dataset(cfg)`` with ``cfg['type']`` one of:

* ``voc``: :class:`PascalVOC` arguments (``root``, ``splits``, ``mode``, ``sbd_root``, ...);
* ``sdd``: :class:`StanfordDrone` arguments (``root``, ``videos``, ``frame_stride``, ...);
* ``visdrone``: :class:`VisDroneDetection` arguments (``root``, ``max_occlusion``, ...);
* ``seg_folder``: :class:`SegmentationFolder` arguments (``image_dir``, ``mask_dir``,
  ``class_map``, ...), or ``pairs_file`` (+ ``root``) for :meth:`SegmentationFolder.from_pairs_file`;
* ``coco``: :class:`CocoDetection` arguments (``image_dir``, ``ann_file``, ``crowd``, ...);
* ``deepforest_trees``: :func:`deepforest_tree_split` arguments (``split``, ``tile_size``, ...);
* ``solaris_buildings``: :func:`solaris_building_split` arguments (``split``, ``tile_size``, ...).

For the first five an optional ``tile`` mapping (``size``, ``stride``, ``edge``, ``region``,
``min_box_visibility``, ``min_box_size``, ``drop_empty``) cuts the images into tiles
(:class:`TiledDataset`). Unknown keys are errors. Example::

    type: seg_folder
    image_dir: /data/uavid/images
    mask_dir: /data/uavid/labels
    class_map: config/datasets/uavid.yaml
    seg_classes: [background, building, road, tree, low_vegetation, car, human]
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch.utils.data import ConcatDataset, Dataset

from .aerial import deepforest_tree_split, solaris_building_split
from .base import JointTransformFn
from .coco import CocoDetection
from .sampler import InterleavedBatchSampler
from .sdd import StanfordDrone
from .seg_folder import SegmentationFolder
from .tiling import TiledDataset
from .visdrone import VisDroneDetection
from .voc import PascalVOC

_PATH_KEYS = {"root", "sbd_root", "image_dir", "mask_dir", "ann_file", "pairs_file", "data_dir"}
_TILE_KEYS = {"size": "tile_size", "stride": "stride", "edge": "edge", "region": "region",
              "min_box_visibility": "min_box_visibility", "min_box_size": "min_box_size", "drop_empty": "drop_empty"}


def _factory(cfg: Mapping[str, Any]) -> tuple[Callable[..., Dataset], bool]:
    """The callable building ``cfg``'s type, and whether it accepts a ``tile`` section."""
    kind = cfg.get("type")
    if kind == "seg_folder" and "pairs_file" in cfg:
        return SegmentationFolder.from_pairs_file, True
    factories: dict[str, tuple[Callable[..., Dataset], bool]] = {
        "voc": (PascalVOC, True),
        "sdd": (StanfordDrone, True),
        "visdrone": (VisDroneDetection, True),
        "seg_folder": (SegmentationFolder, True),
        "coco": (CocoDetection, True),
        "deepforest_trees": (deepforest_tree_split, False),
        "solaris_buildings": (solaris_building_split, False),
    }
    if kind not in factories:
        raise ValueError(f"dataset config needs 'type' in {sorted(factories)}, got {kind!r}")
    return factories[kind]


def build_dataset(cfg: Mapping[str, Any], transforms: JointTransformFn | None = None) -> Dataset:
    """Build the dataset described by ``cfg`` (see module docstring); ``transforms`` is applied
    to every sample (after tiling)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"dataset config must be a mapping, got {type(cfg).__name__}")
    factory, can_tile = _factory(cfg)
    allowed = set(inspect.signature(factory).parameters) - {"self", "transforms"}
    kwargs = {k: v for k, v in cfg.items() if k not in ("type", "tile")}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"dataset type {cfg['type']!r}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
    for key in _PATH_KEYS & set(kwargs):
        if kwargs[key] is not None:
            kwargs[key] = Path(kwargs[key]).expanduser()
    tile = cfg.get("tile")
    if tile is None:
        return factory(**kwargs, transforms=transforms)
    if not can_tile:
        raise ValueError(f"dataset type {cfg['type']!r} is tiled by its own arguments; remove 'tile'")
    if not isinstance(tile, Mapping) or "size" not in tile or set(tile) - set(_TILE_KEYS):
        raise ValueError(f"'tile' must be a mapping with 'size' and optionally {sorted(set(_TILE_KEYS) - {'size'})}, got {tile!r}")
    return TiledDataset(factory(**kwargs), **{_TILE_KEYS[k]: v for k, v in tile.items()}, transforms=transforms)


def build_interleaved(
    source_cfgs: Sequence[Mapping[str, Any]],
    samples_per_source: Sequence[int],
    transforms: JointTransformFn | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> tuple[ConcatDataset, InterleavedBatchSampler]:
    """Datasets of ``source_cfgs`` joined in a ``ConcatDataset``, with an
    :class:`InterleavedBatchSampler` putting ``samples_per_source[i]`` samples of source ``i``
    into every batch. Use as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)``."""
    dataset = ConcatDataset([build_dataset(cfg, transforms) for cfg in source_cfgs])
    sampler = InterleavedBatchSampler.from_concat(
        dataset, samples_per_source, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last
    )
    return dataset, sampler
