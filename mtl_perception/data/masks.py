"""Turning stored label images (index or colour PNGs) into model-class masks."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .base import IGNORE_INDEX
from .class_map import ClassMap, colors_to_indices, mask_lookup
from .errors import CorruptImageError

log = logging.getLogger(__name__)

MASK_FORMATS = ("auto", "index", "color")


class MaskDecoder:
    """Convert a raw label array into a uint8 [H,W] mask of model class indices (255 = ignore).

    Args:
        class_map: the dataset's classes (``segmentation`` names, optional ``palette``).
        target_names: the model's segmentation classes (default: the dataset's, renamed).
        unmapped: ``'ignore'`` or ``'background'`` for classes the model lacks.
        mask_format: ``'index'`` (values are class indices), ``'color'`` (RGB colours from the
            palette) or ``'auto'`` (2-D arrays are index masks, 3-D arrays colour masks).
    """

    def __init__(
        self,
        class_map: ClassMap,
        target_names: Sequence[str] | None = None,
        unmapped: str = "ignore",
        mask_format: str = "auto",
    ) -> None:
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
        if mask_format == "color" and class_map.palette is None:
            raise ValueError(f"class map {class_map.name!r} has no palette, needed for colour masks")
        self.class_map = class_map
        self.mask_format = mask_format
        self.lookup, self.target_names = mask_lookup(class_map, target_names, unmapped)
        self._warned = False

    def __call__(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Decode ``raw`` (read from ``path``, which is only used in messages).

        Raises:
            CorruptImageError: this file's mask has the wrong shape or values (the sample is skipped).
        """
        is_color = raw.ndim == 3
        if self.mask_format == "index" and is_color:
            raise CorruptImageError(path, "expected an index (palette/grey) mask, got a colour image")
        if is_color:
            if self.class_map.palette is None:
                raise ValueError(f"{path}: colour mask but class map {self.class_map.name!r} has no palette")
            indices, unknown = colors_to_indices(
                raw[..., :3], self.class_map.palette, self.class_map.ignore_colors, self.class_map.ignore_index
            )
            if unknown and not self._warned:
                self._warned = True
                log.warning("%s: colours %s are not in the palette of %r; set to ignore (255)",
                            path, unknown[:8], self.class_map.name)
        else:
            if raw.ndim != 2:
                raise CorruptImageError(path, f"mask must be [H,W] or [H,W,3], got shape {raw.shape}")
            if raw.max(initial=0) > 255:
                raise CorruptImageError(path, f"mask values exceed 255 (max {int(raw.max())})")
            indices = raw.astype(np.uint8, copy=False)
            num_classes = len(self.class_map.segmentation or ())
            out_of_range = (indices >= num_classes) & (indices != self.class_map.ignore_index)
            if out_of_range.any() and not self._warned:
                self._warned = True
                log.warning("%s: mask values %s are not classes of %r; set to ignore (255)",
                            path, np.unique(indices[out_of_range])[:8].tolist(), self.class_map.name)
        return self.lookup[indices]


__all__ = ["MaskDecoder", "MASK_FORMATS", "IGNORE_INDEX"]
