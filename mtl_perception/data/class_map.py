"""Class maps: a dataset's class names (and mask colours), read from YAML, and their remapping
onto a model's class lists.

YAML format (all keys optional except that at least one of ``detection`` and
``segmentation`` must be present)::

    name: uavid
    detection: [car, person]            # box label i is detection[i]
    segmentation: [clutter, building]   # mask value i is segmentation[i]
    palette: [[0, 0, 0], "#800000"]     # colour of each segmentation class in colour masks
    ignore_index: 255                   # mask value meaning "ignore"
    ignore_colors: [[224, 224, 192]]    # colours meaning "ignore" in colour masks
    rename: {Dead: tree, Alive: tree}   # source name -> name in the model's class list

Remapping rules (documented contract):

* each source name is first passed through ``rename`` (names not listed keep their name);
* boxes whose (renamed) class is not in the model's detection class list are **dropped**;
* mask pixels whose (renamed) class is not in the model's segmentation class list become
  ``255`` (ignore) by default, or ``0`` (background) with ``unmapped='background'``;
* a class name found in annotations but absent from the class map is an error;
* with no model class list given, the target list is the renamed source list with
  duplicates removed (first occurrence keeps its position).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from .base import IGNORE_INDEX
from .errors import DatasetFormatError

Color = tuple[int, int, int]
_KNOWN_KEYS = {"name", "detection", "segmentation", "palette", "ignore_index", "ignore_colors", "rename"}


def _parse_color(value: Any, where: str) -> Color:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in value):
        return tuple(value)  # type: ignore[return-value]
    raise DatasetFormatError(f"{where}: colour must be [r, g, b] with 0..255 ints or '#rrggbb', got {value!r}")


def _parse_names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(n, str) and n for n in value):
        raise DatasetFormatError(f"{where}: expected a non-empty list of class names, got {value!r}")
    if len(set(value)) != len(value):
        raise DatasetFormatError(f"{where}: duplicate class names in {list(value)}")
    return tuple(value)


@dataclass(frozen=True)
class ClassMap:
    """Class names of one dataset.

    Attributes:
        name: dataset name (informative).
        detection: box class names; label ``i`` means ``detection[i]``. None if no boxes.
        segmentation: mask class names; value ``i`` means ``segmentation[i]``. None if no masks.
        palette: RGB colour per segmentation class, for colour-coded masks (optional).
        ignore_index: source mask value meaning "ignore".
        ignore_colors: colours meaning "ignore" in colour-coded masks.
        rename: source class name -> model class name.
    """

    name: str = ""
    detection: tuple[str, ...] | None = None
    segmentation: tuple[str, ...] | None = None
    palette: tuple[Color, ...] | None = None
    ignore_index: int = IGNORE_INDEX
    ignore_colors: tuple[Color, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.detection is None and self.segmentation is None:
            raise DatasetFormatError(f"class map {self.name!r}: needs 'detection' and/or 'segmentation' names")
        if self.palette is not None:
            if self.segmentation is None or len(self.palette) != len(self.segmentation):
                raise DatasetFormatError(
                    f"class map {self.name!r}: palette has {len(self.palette)} colours but there are "
                    f"{0 if self.segmentation is None else len(self.segmentation)} segmentation classes"
                )
            if len(set(self.palette)) != len(self.palette):
                raise DatasetFormatError(f"class map {self.name!r}: palette colours must be distinct")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "ClassMap":
        """Build from a parsed YAML mapping; ``source`` names the file in error messages."""
        if not isinstance(data, Mapping):
            raise DatasetFormatError(f"{source}: class map must be a mapping, got {type(data).__name__}")
        unknown = set(data) - _KNOWN_KEYS
        if unknown:
            raise DatasetFormatError(f"{source}: unknown class map keys {sorted(unknown)}; allowed {sorted(_KNOWN_KEYS)}")
        detection = _parse_names(data["detection"], f"{source}: detection") if "detection" in data else None
        segmentation = _parse_names(data["segmentation"], f"{source}: segmentation") if "segmentation" in data else None
        palette = None
        if data.get("palette") is not None:
            palette = tuple(_parse_color(c, f"{source}: palette[{i}]") for i, c in enumerate(data["palette"]))
        ignore_colors = tuple(
            _parse_color(c, f"{source}: ignore_colors[{i}]") for i, c in enumerate(data.get("ignore_colors") or ())
        )
        rename = data.get("rename") or {}
        if not isinstance(rename, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in rename.items()):
            raise DatasetFormatError(f"{source}: rename must map class names to class names, got {rename!r}")
        ignore_index = data.get("ignore_index", IGNORE_INDEX)
        if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
            raise DatasetFormatError(f"{source}: ignore_index must be an int in 0..255, got {ignore_index!r}")
        try:
            return cls(
                name=str(data.get("name", Path(source).stem)),
                detection=detection,
                segmentation=segmentation,
                palette=palette,
                ignore_index=ignore_index,
                ignore_colors=ignore_colors,
                rename=dict(rename),
            )
        except DatasetFormatError as err:
            raise DatasetFormatError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ClassMap":
        """Load a class map YAML file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"class map file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise DatasetFormatError(f"{path}: invalid YAML: {err}") from err
        return cls.from_dict(data, source=str(path))

    def with_rename(self, rename: Mapping[str, str] | None) -> "ClassMap":
        """A copy whose ``rename`` is extended (overridden) by ``rename``."""
        if not rename:
            return self
        return replace(self, rename={**self.rename, **rename})


def load_class_map(spec: "ClassMap | str | Path | Mapping[str, Any] | None", default: ClassMap | None = None) -> ClassMap:
    """Turn a ClassMap, a YAML path or a mapping into a ClassMap; ``None`` gives ``default``."""
    if spec is None:
        if default is None:
            raise ValueError("a class map is required (a YAML path, a mapping or a ClassMap)")
        return default
    if isinstance(spec, ClassMap):
        return spec
    if isinstance(spec, (str, Path)):
        return ClassMap.from_yaml(spec)
    return ClassMap.from_dict(spec)


@dataclass(frozen=True)
class LabelMapping:
    """Source class index -> model class index.

    Attributes:
        source_names: the dataset's class names.
        target_names: the model's class names.
        lut: int64 [len(source_names)]; -1 where the source class has no model class.
    """

    source_names: tuple[str, ...]
    target_names: tuple[str, ...]
    lut: np.ndarray

    def index_by_name(self) -> dict[str, int]:
        """Source name -> model index (-1 for unmapped)."""
        return {name: int(i) for name, i in zip(self.source_names, self.lut)}


def map_classes(
    source_names: Sequence[str],
    target_names: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
) -> LabelMapping:
    """Map source classes onto ``target_names`` after ``rename`` (see module docstring)."""
    rename = rename or {}
    renamed = [rename.get(name, name) for name in source_names]
    if target_names is None:
        target_names = tuple(dict.fromkeys(renamed))
    target_names = tuple(target_names)
    if len(set(target_names)) != len(target_names):
        raise ValueError(f"duplicate names in model class list {list(target_names)}")
    position = {name: i for i, name in enumerate(target_names)}
    lut = np.array([position.get(name, -1) for name in renamed], dtype=np.int64)
    return LabelMapping(tuple(source_names), target_names, lut)


def detection_mapping(class_map: ClassMap, target_names: Sequence[str] | None = None) -> LabelMapping:
    """Mapping of ``class_map.detection`` onto the model's detection classes."""
    if class_map.detection is None:
        raise ValueError(f"class map {class_map.name!r} has no detection classes")
    return map_classes(class_map.detection, target_names, class_map.rename)


def mask_lookup(
    class_map: ClassMap, target_names: Sequence[str] | None = None, unmapped: str = "ignore"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A 256-entry uint8 table from source mask value to model mask value, and the model's names.

    Source values beyond the class list and the source ``ignore_index`` map to 255.
    Args:
        unmapped: ``'ignore'`` (255) or ``'background'`` (0) for classes the model lacks.
    """
    if class_map.segmentation is None:
        raise ValueError(f"class map {class_map.name!r} has no segmentation classes")
    if unmapped not in ("ignore", "background"):
        raise ValueError(f"unmapped must be 'ignore' or 'background', got {unmapped!r}")
    if len(class_map.segmentation) > 255:
        raise ValueError("at most 255 segmentation classes are supported (255 is the ignore value)")
    mapping = map_classes(class_map.segmentation, target_names, class_map.rename)
    fallback = IGNORE_INDEX if unmapped == "ignore" else 0
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for value, target in enumerate(mapping.lut):
        table[value] = target if target >= 0 else fallback
    table[class_map.ignore_index] = IGNORE_INDEX
    return table, mapping.target_names


def colors_to_indices(
    rgb: np.ndarray, palette: Sequence[Color], ignore_colors: Sequence[Color] = (), ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, list[Color]]:
    """Convert an [H,W,3] colour-coded mask to [H,W] uint8 palette indices.

    Colours in ``ignore_colors`` and colours not in the palette become ``ignore_index``.
    Returns the index mask and the list of colours that were not in the palette.
    """
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)
    unique, inverse = np.unique(packed.reshape(-1), return_inverse=True)
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette)}
    for r, g, b in ignore_colors:
        lookup[(r << 16) | (g << 8) | b] = ignore_index
    values = np.array([lookup.get(int(u), ignore_index) for u in unique], dtype=np.uint8)
    unknown = [((int(u) >> 16) & 255, (int(u) >> 8) & 255, int(u) & 255) for u in unique if int(u) not in lookup]
    return values[inverse].reshape(packed.shape), unknown
