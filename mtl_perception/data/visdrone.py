"""VisDrone2019-DET: detection in drone images (10 classes).

Layout (as unpacked from the VisDrone release)::

    <root>/images/<name>.jpg
    <root>/annotations/<name>.txt

One object per annotation line, comma separated (a trailing comma is allowed)::

    bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion

``object_category`` 1..10 are the classes of ``config/datasets/visdrone.yaml``; 0 marks an
*ignored region* (a crowd or an area the annotators skipped) and 11 *others*. Ignored
regions become the sample's ``ignore_mask`` ([H, W] uint8 ``tv_tensors.Mask``, 1 inside a
region): the SSD loss neither rewards nor penalises anchors lying mostly inside one (see
:func:`mtl_perception.losses.multibox_loss`), and evaluation drops detections and boxes lying
mostly inside one, as the VisDrone toolkit does (:mod:`mtl_perception.ignored_regions`).
Boxes of classes the model lacks (by default ``others``) are dropped. ``truncation`` is 0
(none) or 1 (1-50 % outside the image); ``occlusion`` 0 (none), 1 (1-50 %) or 2 (50-100 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from .base import DetectionRecords, JointTransformFn, Sample, detection_fields
from .class_map import ClassMap, detection_mapping, load_class_map
from .errors import DatasetFormatError
from .image_files import IMAGE_EXTENSIONS, read_rgb_image, require_dir, require_file

VISDRONE_CLASSES = ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle",
                    "bus", "motor")
OTHERS = "others"
VISDRONE_CLASS_MAP = ClassMap(name="visdrone", detection=(*VISDRONE_CLASSES, OTHERS))
IGNORED_REGION = 0  # object_category of ignored regions
MAX_OCCLUSION = 2
_FIELDS = ("bbox_left", "bbox_top", "bbox_width", "bbox_height", "score", "object_category", "truncation",
           "occlusion")


@dataclass(frozen=True)
class VisDroneAnnotations:
    """One parsed annotation file.

    Attributes:
        boxes: float32 [N,4] XYXY of the objects (categories 1..11).
        categories: int64 [N] ``object_category`` (1-based).
        truncation, occlusion: int64 [N].
        ignored: float32 [M,4] XYXY ignored regions (category 0).
    """

    boxes: np.ndarray
    categories: np.ndarray
    truncation: np.ndarray
    occlusion: np.ndarray
    ignored: np.ndarray


def parse_visdrone_annotations(path: str | Path, num_categories: int = len(VISDRONE_CLASSES) + 1) -> VisDroneAnnotations:
    """Read one VisDrone-DET annotation ``.txt``.

    Raises:
        DatasetFormatError: a line without 8 integer fields, a negative size, a category
            above ``num_categories`` or a truncation/occlusion out of range (the message
            names file and line).
    """
    path = require_file(path, "VisDrone annotation file")
    rows, ignored = [], []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip().rstrip(",")
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != len(_FIELDS):
            raise DatasetFormatError(f"{path}:{line_number}: expected {len(_FIELDS)} comma-separated fields "
                                     f"({','.join(_FIELDS)}), got {len(fields)}")
        try:
            left, top, width, height, _, category, truncation, occlusion = (int(v) for v in fields)
        except ValueError:
            raise DatasetFormatError(f"{path}:{line_number}: non-integer field in {line!r}") from None
        if width < 0 or height < 0:
            raise DatasetFormatError(f"{path}:{line_number}: negative box size {width}x{height}")
        if not 0 <= category <= num_categories:
            raise DatasetFormatError(f"{path}:{line_number}: object_category {category} not in 0..{num_categories}")
        if truncation not in (0, 1) or not 0 <= occlusion <= MAX_OCCLUSION:
            raise DatasetFormatError(f"{path}:{line_number}: truncation must be 0/1 and occlusion 0..2, "
                                     f"got {truncation}, {occlusion}")
        box = (left, top, left + width, top + height)
        if category == IGNORED_REGION:
            ignored.append(box)
        else:
            rows.append((*box, category, truncation, occlusion))
    table = np.array(rows, dtype=np.int64).reshape(-1, 7)
    return VisDroneAnnotations(
        boxes=table[:, :4].astype(np.float32),
        categories=table[:, 4],
        truncation=table[:, 5],
        occlusion=table[:, 6],
        ignored=np.array(ignored, dtype=np.float32).reshape(-1, 4),
    )


def ignore_mask(regions: np.ndarray, canvas_size: tuple[int, int]) -> tv_tensors.Mask:
    """[H, W] uint8 mask, 1 inside the XYXY ``regions`` (rounded outwards to whole pixels)."""
    height, width = canvas_size
    mask = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in regions:
        mask[max(int(np.floor(y0)), 0):max(int(np.ceil(y1)), 0), max(int(np.floor(x0)), 0):max(int(np.ceil(x1)), 0)] = 1
    return tv_tensors.Mask(torch.from_numpy(mask))


class VisDroneDetection(DetectionRecords):
    """VisDrone2019-DET images with their boxes and ignored regions (detection only).

    Args:
        root: folder holding ``images/`` and ``annotations/`` (e.g. ``VisDrone2019-DET-train``).
        max_truncation: drop boxes truncated more than this (0: keep only untruncated boxes).
        max_occlusion: drop boxes occluded more than this (0 none, 1 up to 50 %, 2 all).
        ignored_regions: ``'ignore'`` (default: the ``ignore_mask`` target) or ``'drop'``.
        skip_empty: leave out images without (kept) boxes.
        class_map: class map (YAML path / mapping / ClassMap); default the 10 classes + others.
        det_classes: the model's detection classes (default the 10 VisDrone classes, so
            ``others`` boxes are dropped).
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        root: str | Path,
        max_truncation: int = 1,
        max_occlusion: int = MAX_OCCLUSION,
        ignored_regions: str = "ignore",
        skip_empty: bool = False,
        class_map: ClassMap | str | Path | dict | None = None,
        det_classes: Sequence[str] | None = VISDRONE_CLASSES,
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        if ignored_regions not in ("ignore", "drop"):
            raise ValueError(f"ignored_regions must be 'ignore' or 'drop', got {ignored_regions!r}")
        self.root = require_dir(root, "VisDrone root")
        image_dir = require_dir(self.root / "images", "VisDrone image directory")
        annotation_dir = require_dir(self.root / "annotations", "VisDrone annotation directory")
        self.class_map = load_class_map(class_map, VISDRONE_CLASS_MAP)
        if self.class_map.detection is None:
            raise DatasetFormatError(f"class map {self.class_map.name!r} has no detection classes")
        self.det_mapping = detection_mapping(self.class_map, det_classes)
        self.keep_ignored = ignored_regions == "ignore"
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not images:
            raise FileNotFoundError(f"no images in {image_dir}")
        self.records: list[tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]] = []
        for image_path in images:
            annotation = parse_visdrone_annotations(annotation_dir / f"{image_path.stem}.txt",
                                                    len(self.class_map.detection))
            labels = self.det_mapping.lut[annotation.categories - 1] if len(annotation.categories) else \
                np.zeros(0, dtype=np.int64)
            keep = (labels >= 0) & (annotation.truncation <= max_truncation) & (annotation.occlusion <= max_occlusion)
            if skip_empty and not keep.any():
                continue
            self.records.append((image_path.stem, image_path, annotation.boxes[keep], labels[keep], annotation.ignored))
        if not self.records:
            raise ValueError(f"VisDroneDetection: no images with boxes under {self.root}")

    def load_sample(self, index: int) -> Sample:
        stem, path, boxes, labels, ignored = self.records[index]
        image = read_rgb_image(path)
        canvas = tuple(image.shape[-2:])
        target = {"image_id": stem}
        target.update(detection_fields(boxes, labels, canvas))
        if self.keep_ignored and len(ignored):
            target["ignore_mask"] = ignore_mask(ignored, canvas)
        return image, target


__all__ = ["VISDRONE_CLASSES", "VISDRONE_CLASS_MAP", "VisDroneAnnotations", "VisDroneDetection", "ignore_mask",
           "parse_visdrone_annotations"]
