"""Real aerial sample data shipped inside two PyPI packages (files are read, the packages are
never imported):

* ``deepforest==2.1.0`` (``deepforest/data/``): RGB orthophoto tiles with tree crown boxes in
  Pascal VOC XML (``OSBS_029``, ``SOAP_061`` with classes Alive/Dead, two large
  ``2019_YELL_2_*_image_crop*`` crops). Detection only; every class maps to ``tree``.
* ``solaris==0.2.1`` (``solaris/data/``): ``sample_geotiff.tif``, a 900x900 single-band 16-bit
  satellite tile, and ``sample_fp_mask_from_geojson.tif``, its building footprint mask.
  Segmentation only; classes ``background``, ``building``.

Install them without their dependencies: ``pip install --no-deps deepforest==2.1.0 solaris==0.2.1``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import DetectionRecords, LabelledImageDataset, JointTransformFn, Sample, detection_fields, mask_field
from .class_map import ClassMap, detection_mapping, load_class_map, mask_lookup
from .errors import DatasetFormatError
from .image_files import read_rgb_image, read_tiff, require_file, rgb_array_to_image
from .tiling import TiledDataset
from .voc_xml import parse_voc_xml

DEEPFOREST_CLASS_MAP = ClassMap(
    name="deepforest_trees",
    detection=("Tree", "Alive", "Dead"),
    rename={"Tree": "tree", "Alive": "tree", "Dead": "tree"},
)
SOLARIS_CLASS_MAP = ClassMap(name="solaris_buildings", segmentation=("background", "building"))

DEEPFOREST_HELDOUT = ("OSBS_029", "2019_YELL_2_541000_4977000_image_crop")
SOLARIS_IMAGE = "sample_geotiff.tif"
SOLARIS_MASK = "sample_fp_mask_from_geojson.tif"
SPLITS = ("all", "train", "heldout", "fit", "val")
# The validation split for recipe choices, cut from the training images (no pixel of the held-out
# tiles): ``train`` = ``fit`` + ``val``, and ``fit`` and ``val`` never share a pixel.
DEEPFOREST_VAL_FROM_ROW = 2000  # rows from here down of each training image are val (the YELL crop's last 472)
SOLARIS_VAL_FROM_COLUMN = 2 / 3  # of the train rows, the columns right of this fraction are val


def package_data_dir(package: str, version: str) -> Path:
    """``<site-packages>/<package>/data`` found with ``importlib.util.find_spec`` (which does not
    run the package's code). Raises FileNotFoundError with the pip command when missing."""
    hint = f"pip install --no-deps {package}=={version}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        data_dir = Path(location) / "data"
        if data_dir.is_dir():
            return data_dir
    raise FileNotFoundError(f"sample data of the '{package}' package not found; install it with: {hint}")


class DeepForestTrees(DetectionRecords):
    """Tree crown boxes on the deepforest sample orthophotos (whole images; tile them with
    :class:`TiledDataset`). Box coordinates are used as written (0-based pixels).

    Args:
        images: file stems to use (default every ``.png`` with a matching ``.xml``).
        data_dir: folder of the files (default the installed deepforest package's ``data``).
        class_map: class map (default: Tree/Alive/Dead all renamed to ``tree``).
        det_classes: the model's detection classes (default ``('tree',)``).
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        images: Sequence[str] | None = None,
        data_dir: str | Path | None = None,
        class_map: ClassMap | str | Path | dict | None = None,
        det_classes: Sequence[str] | None = None,
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        self.data_dir = Path(data_dir) if data_dir is not None else package_data_dir("deepforest", "2.1.0")
        if images is None:
            images = sorted(p.stem for p in self.data_dir.glob("*.png") if p.with_suffix(".xml").is_file())
            if not images:
                raise FileNotFoundError(f"no .png with a matching .xml in {self.data_dir}")
        self.class_map = load_class_map(class_map, DEEPFOREST_CLASS_MAP)
        self.det_mapping = detection_mapping(self.class_map, det_classes)
        index_of = self.det_mapping.index_by_name()
        self.records: list[tuple[str, Path, np.ndarray, np.ndarray]] = []
        for stem in images:
            image_path = require_file(self.data_dir / f"{stem}.png", "deepforest image")
            xml_path = self.data_dir / f"{stem}.xml"
            annotation = parse_voc_xml(xml_path)
            unknown = sorted(set(annotation.names) - set(index_of))
            if unknown:
                raise DatasetFormatError(f"{xml_path}: unknown classes {unknown}; known {list(index_of)}")
            labels = np.array([index_of[n] for n in annotation.names], dtype=np.int64)
            keep = labels >= 0
            self.records.append((stem, image_path, annotation.boxes[keep].astype(np.float32), labels[keep]))

    def load_sample(self, index: int) -> Sample:
        stem, path, boxes, labels = self.records[index]
        image = read_rgb_image(path)
        target = {"image_id": stem}
        target.update(detection_fields(boxes, labels, tuple(image.shape[-2:])))
        return image, target


def stretch_to_uint8(band: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0) -> np.ndarray:
    """Linearly map the [low, high] percentile range of a raster band to 0..255 (uint8)."""
    low, high = np.percentile(band, [low_percentile, high_percentile])
    scaled = (band.astype(np.float64) - low) * (255.0 / max(high - low, 1e-9))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


class SolarisBuildings(LabelledImageDataset):
    """The solaris 900x900 sample tile with its building footprint mask (one sample).

    The single 16-bit band is contrast-stretched (1st-99th percentile of the whole tile) to
    uint8 and repeated into 3 channels. Mask: 0 background, 1 building.

    Args:
        data_dir: folder of the files (default the installed solaris package's ``data``).
        seg_classes: the model's segmentation classes (default ``('background', 'building')``).
        unmapped_mask: ``'ignore'`` or ``'background'`` for classes the model lacks.
        transforms: joint transform applied to the sample.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        seg_classes: Sequence[str] | None = None,
        unmapped_mask: str = "ignore",
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        self.data_dir = Path(data_dir) if data_dir is not None else package_data_dir("solaris", "0.2.1")
        self.image_path = require_file(self.data_dir / SOLARIS_IMAGE, "solaris sample image")
        self.mask_path = require_file(self.data_dir / SOLARIS_MASK, "solaris building mask")
        self.lookup, self.seg_classes = mask_lookup(SOLARIS_CLASS_MAP, seg_classes, unmapped_mask)
        self._sample: Sample | None = None

    def __len__(self) -> int:
        return 1

    def load_sample(self, index: int) -> Sample:
        if self._sample is None:
            band = read_tiff(self.image_path)
            if band.ndim == 3:
                band = band[..., 0] if band.shape[-1] <= 4 else band[0]
            footprints = read_tiff(self.mask_path)
            if footprints.shape[:2] != band.shape:
                raise DatasetFormatError(f"{self.mask_path}: mask is {footprints.shape}, image is {band.shape}")
            gray = stretch_to_uint8(band)
            mask = self.lookup[(footprints.reshape(band.shape) > 0).astype(np.uint8)]
            self._sample = (rgb_array_to_image(np.stack([gray] * 3, axis=-1)), {"image_id": "solaris_sample_geotiff", "mask": mask_field(mask)})
        image, target = self._sample
        return image.clone(), {k: (v.clone() if hasattr(v, "clone") else v) for k, v in target.items()}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def deepforest_tree_split(
    split: str = "all",
    tile_size: int = 400,
    stride: int | None = None,
    edge: str | None = None,
    heldout: Sequence[str] = DEEPFOREST_HELDOUT,
    det_classes: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    transforms: JointTransformFn | None = None,
) -> TiledDataset:
    """deepforest trees cut into ``tile_size`` tiles; ``split`` picks whole images:
    ``'heldout'`` the stems in ``heldout``, ``'train'`` the others, ``'all'`` every image; and of the
    training images ``'fit'`` the rows above :data:`DEEPFOREST_VAL_FROM_ROW`, ``'val'`` the rows
    from it down (the validation split for recipe choices; the two share no pixel).
    ``edge`` (see :class:`TiledDataset`) defaults to ``'partial'`` for held out and val, else ``'shift'``."""
    _check_split(split)
    every = DeepForestTrees(data_dir=data_dir, det_classes=det_classes)
    stems = [r[0] for r in every.records]
    unknown = sorted(set(heldout) - set(stems))
    if unknown:
        raise ValueError(f"held-out images {unknown} are not among the deepforest images {stems}")
    if split != "all":
        stems = [s for s in stems if (s in heldout) == (split == "heldout")]
    base = DeepForestTrees(stems, data_dir=data_dir, det_classes=det_classes)
    if edge is None:
        edge = "partial" if split in ("heldout", "val") else "shift"
    far = 1 << 30  # the region is clipped to each image
    region = {"fit": (0, 0, DEEPFOREST_VAL_FROM_ROW, far), "val": (DEEPFOREST_VAL_FROM_ROW, 0, far, far)}.get(split)
    return TiledDataset(base, tile_size, stride, edge=edge, region=region, transforms=transforms)


def solaris_building_split(
    split: str = "all",
    tile_size: int = 300,
    stride: int | None = None,
    heldout_fraction: float = 1 / 3,
    seg_classes: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    transforms: JointTransformFn | None = None,
) -> TiledDataset:
    """Tiles of the solaris tile; ``'train'`` tiles lie in the top ``1 - heldout_fraction`` of the
    rows, ``'heldout'`` tiles in the bottom rows, so the two never share a pixel. Of the train
    rows, ``'val'`` tiles lie right of :data:`SOLARIS_VAL_FROM_COLUMN` of the width (non-overlapping
    tiles) and ``'fit'`` tiles left of it."""
    _check_split(split)
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    base = SolarisBuildings(data_dir=data_dir, seg_classes=seg_classes)
    height, width = base.image_size(0)
    boundary = int(round(height * (1 - heldout_fraction)))
    column = int(round(width * SOLARIS_VAL_FROM_COLUMN))
    region = {"all": None, "train": (0, 0, boundary, width), "heldout": (boundary, 0, height, width),
              "fit": (0, 0, boundary, column), "val": (0, column, boundary, width)}[split]
    if split == "val":
        stride = None
    return TiledDataset(base, tile_size, stride, region=region, transforms=transforms)


@dataclass(frozen=True)
class AerialSplits:
    """Train / held-out datasets of the aerial sample data (det-only trees, seg-only buildings)."""

    det_train: TiledDataset
    det_heldout: TiledDataset
    seg_train: TiledDataset
    seg_heldout: TiledDataset


def aerial_sample_splits(
    det_tile_size: int = 400,
    seg_tile_size: int = 300,
    seg_train_stride: int | None = 150,
    det_heldout: Sequence[str] = DEEPFOREST_HELDOUT,
    seg_heldout_fraction: float = 1 / 3,
    det_classes: Sequence[str] | None = None,
    seg_classes: Sequence[str] | None = None,
    train_transforms: JointTransformFn | None = None,
    eval_transforms: JointTransformFn | None = None,
) -> AerialSplits:
    """Train and held-out sets for the paper's aerial setting from the packaged sample data.

    Detection (deepforest trees, one class ``tree``); whole images are held out:

    * train: ``2019_YELL_2_528000_4978000_image_crop2`` (2299x2472, 574 trees) in
      ``det_tile_size`` tiles, the last row/column shifted to end at the border (6 x 7 = 42
      tiles at 400 px), plus ``SOAP_061`` (400x400, 37 Alive/Dead trees): 43 images, 716 boxes
      (boxes in overlapping edge tiles count twice);
    * held out: the NEON tile ``OSBS_029`` (another site, 61 trees) and the other YELL crop
      ``2019_YELL_2_541000_4977000_image_crop`` (1249x1035, 279 trees) in non-overlapping tiles
      (3 x 3 at 400 px; the 49 px right remnant is dropped): 10 images, 323 boxes, no box
      counted twice.

    A box cut by a tile border is kept only if half its area is inside (see :class:`TiledDataset`).

    Segmentation (solaris buildings; classes ``background``, ``building``): the 900x900 tile
    (4.2 % building pixels) is split by rows. Train tiles (``seg_tile_size``, stride
    ``seg_train_stride``) lie in rows 0..599, held-out tiles in rows 600..899: 15 train images
    (5.2 % building pixels) and 3 held-out images (2.2 %) of 300x300 by default.

    Counts are for the defaults; :func:`mtl_perception.data.stats.summarize_dataset` recounts.
    """
    return AerialSplits(
        det_train=deepforest_tree_split("train", det_tile_size, heldout=det_heldout, det_classes=det_classes,
                                        transforms=train_transforms),
        det_heldout=deepforest_tree_split("heldout", det_tile_size, heldout=det_heldout, det_classes=det_classes,
                                          transforms=eval_transforms),
        seg_train=solaris_building_split("train", seg_tile_size, seg_train_stride, seg_heldout_fraction, seg_classes,
                                         transforms=train_transforms),
        seg_heldout=solaris_building_split("heldout", seg_tile_size, None, seg_heldout_fraction, seg_classes,
                                           transforms=eval_transforms),
    )
