"""Parser for Pascal-VOC-style annotation XML files (also used by other datasets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError


@dataclass(frozen=True)
class VocAnnotation:
    """Contents of one annotation XML.

    Attributes:
        filename: the ``<filename>`` entry ('' when absent).
        size: (H, W) from ``<size>``, or None when absent.
        names: class name of each object.
        boxes: float64 [N,4] ``xmin, ymin, xmax, ymax`` exactly as written in the file.
        difficult: bool [N].
    """

    filename: str
    size: tuple[int, int] | None
    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray


def _number(node: ET.Element | None, tag: str, path: Path, where: str) -> float:
    child = None if node is None else node.find(tag)
    if child is None or child.text is None:
        raise DatasetFormatError(f"{path}: {where} has no <{tag}>")
    try:
        return float(child.text.strip())
    except ValueError:
        raise DatasetFormatError(f"{path}: {where} <{tag}> is not a number: {child.text!r}") from None


def parse_voc_xml(path: str | Path) -> VocAnnotation:
    """Read a VOC annotation file.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetFormatError: malformed XML, missing fields or a box with xmax < xmin / ymax < ymin.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetFormatError(f"{path}: malformed XML ({err})") from None
    if root.tag != "annotation":
        raise DatasetFormatError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.find("width") is not None:
        size = (int(_number(size_node, "height", path, "<size>")), int(_number(size_node, "width", path, "<size>")))
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        where = f"object #{k}"
        name_node = obj.find("name")
        if name_node is None or not (name_node.text or "").strip():
            raise DatasetFormatError(f"{path}: {where} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(f"{path}: {where} ({name_node.text.strip()}) has no <bndbox>")
        box = [_number(bndbox, tag, path, f"{where} <bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise DatasetFormatError(f"{path}: {where} has an inverted box {box}")
        diff_node = obj.find("difficult")
        names.append(name_node.text.strip())
        boxes.append(box)
        difficult.append(diff_node is not None and (diff_node.text or "0").strip() not in ("0", ""))
    filename_node = root.find("filename")
    return VocAnnotation(
        filename=(filename_node.text or "").strip() if filename_node is not None else "",
        size=size,
        names=tuple(names),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        difficult=np.array(difficult, dtype=bool),
    )
