"""COCO-format detection datasets (an image folder plus an ``instances*.json`` file).

Crowd annotations (``iscrowd: 1``) are dropped with ``crowd='skip'`` (default) or kept with
``target['difficult'] = True`` with ``crowd='difficult'`` so a VOC-style evaluator ignores
them. Boxes are COCO ``[x, y, w, h]`` converted to XYXY; boxes with no area are dropped.
Images without annotations are samples with 0 boxes unless ``skip_empty``.
``image_id`` is the COCO image id as a string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import DetectionRecords, JointTransformFn, Sample, detection_fields
from .class_map import ClassMap, load_class_map, map_classes
from .errors import DatasetFormatError
from .image_files import read_rgb_image, require_dir, require_file

CROWD_MODES = ("skip", "difficult")


def _require(entry: dict, key: str, where: str, path: Path) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetFormatError(f"{path}: {where} has no {key!r}")
    return entry[key]


class CocoDetection(DetectionRecords):
    """Detection samples from a COCO instances file.

    Args:
        image_dir: folder the ``file_name`` entries are relative to.
        ann_file: the instances JSON.
        crowd: ``'skip'`` or ``'difficult'`` (see module docstring).
        class_map: optional class map whose ``rename`` maps category names to model names
            (its ``detection`` list, if given, must contain every category name).
        det_classes: the model's detection classes (default: category names ordered by id,
            after renaming). Categories outside it are dropped.
        skip_empty: leave out images with no (kept) boxes.
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        crowd: str = "skip",
        class_map: ClassMap | str | Path | dict | None = None,
        det_classes: Sequence[str] | None = None,
        skip_empty: bool = False,
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        if crowd not in CROWD_MODES:
            raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
        self.image_dir = require_dir(image_dir, "COCO image directory")
        ann_file = require_file(ann_file, "COCO annotation file")
        try:
            data = json.loads(ann_file.read_text())
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{ann_file}: invalid JSON ({err})") from None
        for key in ("images", "annotations", "categories"):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise DatasetFormatError(f"{ann_file}: missing list {key!r} (not a COCO instances file?)")

        categories = sorted(data["categories"], key=lambda c: _require(c, "id", "a category", ann_file))
        names = [str(_require(c, "name", f"category {c['id']}", ann_file)) for c in categories]
        rename = {}
        self.class_map = None
        if class_map is not None:
            self.class_map = load_class_map(class_map)
            rename = dict(self.class_map.rename)
            if self.class_map.detection is not None:
                unknown = sorted(set(names) - set(self.class_map.detection))
                if unknown:
                    raise DatasetFormatError(f"{ann_file}: categories {unknown} are not in class map {self.class_map.name!r}")
        self.det_mapping = map_classes(names, det_classes, rename)
        label_of_category = {c["id"]: int(t) for c, t in zip(categories, self.det_mapping.lut)}

        per_image: dict[Any, list[tuple[list[float], int, bool]]] = {}
        for k, ann in enumerate(data["annotations"]):
            where = f"annotation #{k}"
            image_id = _require(ann, "image_id", where, ann_file)
            category = _require(ann, "category_id", where, ann_file)
            bbox = _require(ann, "bbox", where, ann_file)
            if category not in label_of_category:
                raise DatasetFormatError(f"{ann_file}: {where} has unknown category_id {category}")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise DatasetFormatError(f"{ann_file}: {where} bbox must be [x, y, w, h], got {bbox!r}")
            is_crowd = bool(ann.get("iscrowd", 0))
            label = label_of_category[category]
            if label < 0 or (is_crowd and crowd == "skip") or bbox[2] <= 0 or bbox[3] <= 0:
                continue
            x, y, w, h = (float(v) for v in bbox)
            per_image.setdefault(image_id, []).append(([x, y, x + w, y + h], label, is_crowd))

        self.records: list[tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]] = []
        for k, image in enumerate(data["images"]):
            image_id = _require(image, "id", f"image #{k}", ann_file)
            file_name = _require(image, "file_name", f"image {image_id}", ann_file)
            objects = per_image.get(image_id, [])
            if skip_empty and not objects:
                continue
            path = require_file(self.image_dir / file_name, f"image {image_id} of {ann_file.name}")
            self.records.append((
                str(image_id),
                path,
                np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4),
                np.array([o[1] for o in objects], dtype=np.int64),
                np.array([o[2] for o in objects], dtype=bool),
            ))
        if not self.records:
            raise ValueError(f"CocoDetection: no images in {ann_file}")
        self._with_difficult = crowd == "difficult"

    def load_sample(self, index: int) -> Sample:
        image_id, path, boxes, labels, crowd = self.records[index]
        image = read_rgb_image(path)
        target = {"image_id": image_id}
        target.update(detection_fields(boxes, labels, tuple(image.shape[-2:]), crowd if self._with_difficult else None))
        return image, target
