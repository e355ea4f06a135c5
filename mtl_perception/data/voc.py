"""Pascal VOC (VOC2007 / VOC2012) with the SBD extra segmentation masks.

Expected layout::

    <root>/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, SegmentationClass/*.png,
                    ImageSets/Main/*.txt, ImageSets/Segmentation/*.txt}
    <root>/VOC2012/...                         (same)
    <sbd_root>/{cls/*.mat, img/*.jpg, train.txt, val.txt}   (or <sbd_root>/dataset/...)

Boxes: VOC stores 1-based inclusive pixel indices; they become continuous XYXY pixel
coordinates ``(xmin - 1, ymin - 1, xmax, ymax)``. Masks: the palette PNGs' index values
(0 = background, 1..20 = classes, 255 = boundary/ignore); SBD ``GTcls.Segmentation``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

from .base import IGNORE_INDEX, LabelledImageDataset, JointTransformFn, Sample, detection_fields, mask_field
from .class_map import ClassMap, detection_mapping, load_class_map
from .errors import CorruptImageError, DatasetFormatError
from .image_files import read_image_size, read_label_png, read_rgb_image, require_dir
from .masks import MaskDecoder
from .voc_xml import parse_voc_xml

log = logging.getLogger(__name__)

VOC_DETECTION_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SEGMENTATION_CLASSES = ("background",) + VOC_DETECTION_CLASSES
VOC_MODES = ("both", "det", "seg")


def voc_palette(num_classes: int = 21) -> tuple[tuple[int, int, int], ...]:
    """The Pascal VOC colour map: the bits of the class index spread over R, G, B from the top bit down."""
    colors = []
    for index in range(num_classes):
        r = g = b = 0
        code = index
        for bit in range(7, -1, -1):
            r |= (code & 1) << bit
            g |= ((code >> 1) & 1) << bit
            b |= ((code >> 2) & 1) << bit
            code >>= 3
        colors.append((r, g, b))
    return tuple(colors)


VOC_CLASS_MAP = ClassMap(
    name="voc",
    detection=VOC_DETECTION_CLASSES,
    segmentation=VOC_SEGMENTATION_CLASSES,
    palette=voc_palette(21),
    ignore_index=IGNORE_INDEX,
    ignore_colors=((224, 224, 192),),
)


def _parse_split(spec: str) -> tuple[str, str]:
    year, sep, name = spec.partition(":")
    if not sep or not year or not name:
        raise ValueError(f"VOC split must look like 'YEAR:NAME' (e.g. '2012:train'), got {spec!r}")
    return year, name


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"image list not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class _VocRecord:
    image_id: str
    image_path: Path
    xml_path: Path | None
    mask_path: Path | None


class PascalVOC(LabelledImageDataset):
    """Pascal VOC detection / segmentation, and the "both" subset labelled for both tasks.

    Args:
        root: the VOCdevkit directory (holding ``VOC2007/``, ``VOC2012/``).
        splits: ``'YEAR:NAME'`` image lists, read from ``ImageSets/Main`` (mode ``'det'``) or
            ``ImageSets/Segmentation`` (modes ``'seg'``, ``'both'``).
        mode: ``'det'`` (boxes only), ``'seg'`` (masks only) or ``'both'``: images with a mask
            (VOC PNG or SBD) *and* an annotation XML, targets holding boxes and mask.
        sbd_root: optional SBD directory; its masks add images in modes ``'seg'``/``'both'``
            (a VOC PNG wins over an SBD mask of the same image).
        sbd_splits: SBD lists to use (``train``, ``val``).
        exclude_splits: ``'YEAR:NAME'`` lists (same ImageSets kind as ``splits``) whose images are
            removed, e.g. ``('2012:val',)`` when training on SBD train, which overlaps VOC2012 val.
        include_difficult: keep boxes flagged difficult (with ``target['difficult']``) or drop them.
        class_map: class map (YAML path / mapping / ClassMap); default VOC's 20 + background.
        det_classes: the model's detection classes (default the 20 VOC classes).
        seg_classes: the model's segmentation classes (default background + 20).
        unmapped_mask: ``'ignore'`` or ``'background'`` for mask classes the model lacks.
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str] = ("2012:train",),
        mode: str = "both",
        sbd_root: str | Path | None = None,
        sbd_splits: Sequence[str] = ("train",),
        exclude_splits: Sequence[str] = (),
        include_difficult: bool = True,
        class_map: ClassMap | str | Path | dict | None = None,
        det_classes: Sequence[str] | None = None,
        seg_classes: Sequence[str] | None = None,
        unmapped_mask: str = "ignore",
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        if mode not in VOC_MODES:
            raise ValueError(f"mode must be one of {VOC_MODES}, got {mode!r}")
        if mode == "det" and sbd_root is not None:
            raise ValueError("SBD has no boxes: sbd_root is only used with mode 'seg' or 'both'")
        if isinstance(splits, str):
            splits = (splits,)
        self.root = require_dir(root, "VOCdevkit root")
        self.mode = mode
        self.include_difficult = include_difficult
        self.class_map = load_class_map(class_map, VOC_CLASS_MAP)
        self.det_mapping = detection_mapping(self.class_map, det_classes) if mode != "seg" else None
        self.mask_decoder = MaskDecoder(self.class_map, seg_classes, unmapped_mask) if mode != "det" else None
        list_kind = "Main" if mode == "det" else "Segmentation"

        excluded = set()
        for spec in exclude_splits:
            year, name = _parse_split(spec)
            excluded.update(_read_id_list(self.root / f"VOC{year}" / "ImageSets" / list_kind / f"{name}.txt"))

        candidates: dict[str, _VocRecord] = {}
        for spec in splits:
            year, name = _parse_split(spec)
            year_dir = require_dir(self.root / f"VOC{year}", f"VOC{year} directory")
            for stem in _read_id_list(year_dir / "ImageSets" / list_kind / f"{name}.txt"):
                image_id = f"VOC{year}/{stem}"
                if stem in excluded or image_id in candidates:
                    continue
                candidates[image_id] = _VocRecord(
                    image_id,
                    year_dir / "JPEGImages" / f"{stem}.jpg",
                    year_dir / "Annotations" / f"{stem}.xml" if mode != "seg" else None,
                    year_dir / "SegmentationClass" / f"{stem}.png" if mode != "det" else None,
                )
        if sbd_root is not None:
            candidates.update(self._sbd_records(Path(sbd_root), sbd_splits, excluded, candidates))

        records, annotations, missing_xml = [], [], 0
        for record in candidates.values():
            if not record.image_path.is_file():
                raise FileNotFoundError(f"image not found: {record.image_path} (listed for {record.image_id})")
            if record.mask_path is not None and not record.mask_path.is_file():
                raise FileNotFoundError(f"segmentation mask not found: {record.mask_path} (listed for {record.image_id})")
            if record.xml_path is not None:
                if not record.xml_path.is_file():
                    if mode == "both":
                        missing_xml += 1
                        continue
                    raise FileNotFoundError(f"annotation not found: {record.xml_path} (listed for {record.image_id})")
                annotations.append(self._read_boxes(record.xml_path))
            records.append(record)
        if missing_xml:
            log.info("PascalVOC(mode='both'): %d masked images have no annotation XML and are left out", missing_xml)
        if not records:
            raise ValueError(f"PascalVOC: no images found for splits {list(splits)} in {self.root} (mode {mode!r})")
        self.records: list[_VocRecord] = records
        self._annotations = annotations

    def _sbd_records(
        self, sbd_root: Path, sbd_splits: Sequence[str], excluded: set[str], existing: dict[str, _VocRecord]
    ) -> dict[str, _VocRecord]:
        sbd_dir = sbd_root / "dataset" if (sbd_root / "dataset" / "cls").is_dir() else sbd_root
        require_dir(sbd_dir / "cls", "SBD cls directory")
        voc2012 = self.root / "VOC2012"
        out: dict[str, _VocRecord] = {}
        for name in sbd_splits:
            for stem in _read_id_list(sbd_dir / f"{name}.txt"):
                image_id = f"VOC2012/{stem}"
                if stem in excluded or image_id in existing or image_id in out:
                    continue
                image_path = voc2012 / "JPEGImages" / f"{stem}.jpg"
                if not image_path.is_file():
                    image_path = sbd_dir / "img" / f"{stem}.jpg"
                out[image_id] = _VocRecord(
                    image_id,
                    image_path,
                    voc2012 / "Annotations" / f"{stem}.xml" if self.mode == "both" else None,
                    sbd_dir / "cls" / f"{stem}.mat",
                )
        return out

    def _read_boxes(self, xml_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        annotation = parse_voc_xml(xml_path)
        index_of = self.det_mapping.index_by_name()
        labels = []
        for name in annotation.names:
            if name not in index_of:
                raise DatasetFormatError(f"{xml_path}: unknown class {name!r}; known: {list(index_of)}")
            labels.append(index_of[name])
        labels = np.array(labels, dtype=np.int64)
        keep = labels >= 0
        if not self.include_difficult:
            keep &= ~annotation.difficult
        boxes = annotation.boxes[keep].copy()
        boxes[:, :2] -= 1.0  # 1-based inclusive pixel indices -> continuous coordinates
        return boxes.astype(np.float32), labels[keep], annotation.difficult[keep]

    def __len__(self) -> int:
        return len(self.records)

    def image_size(self, index: int) -> tuple[int, int]:
        return read_image_size(self.records[index].image_path)

    def _read_mask(self, path: Path) -> np.ndarray:
        if path.suffix == ".mat":
            try:
                raw = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
                raise CorruptImageError(path, f"not an SBD GTcls .mat file ({err})") from err
            raw = np.asarray(raw)
        else:
            raw = read_label_png(path)
        return self.mask_decoder(raw, str(path))

    def load_sample(self, index: int) -> Sample:
        record = self.records[index]
        image = read_rgb_image(record.image_path)
        height, width = image.shape[-2:]
        target: dict = {"image_id": record.image_id}
        if self.mode != "seg":
            boxes, labels, difficult = self._annotations[index]
            target.update(detection_fields(boxes, labels, (height, width), difficult))
        if self.mode != "det":
            mask = self._read_mask(record.mask_path)
            if mask.shape != (height, width):
                raise CorruptImageError(record.mask_path, f"mask is {mask.shape}, image is {(height, width)}")
            target["mask"] = mask_field(mask)
        return image, target
