"""Base class of every dataset here, and helpers that build targets in the sample contract.

Sample contract: ``dataset[i] -> (image, target)`` with ``image`` a uint8 RGB
``tv_tensors.Image`` [3,H,W] and ``target`` a dict holding only the keys the sample is
labelled for: ``boxes`` (XYXY ``tv_tensors.BoundingBoxes`` [N,4] float32), ``labels``
(int64 [N], 0-based, no background), optional ``difficult`` (bool [N]); ``mask``
(``tv_tensors.Mask`` [H,W] uint8, 255 = ignore); optional ``ignore_mask`` (``tv_tensors.Mask``
[H,W] uint8, 1 inside regions the detector must neither find nor avoid, e.g. VisDrone's
ignored regions); always ``image_id`` (str).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .errors import CorruptImageError
from .image_files import read_image_size

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
Sample = tuple[tv_tensors.Image, dict[str, Any]]
JointTransformFn = Callable[[tv_tensors.Image, dict[str, Any]], Sample]


def detection_fields(
    boxes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    canvas_size: tuple[int, int],
    difficult: np.ndarray | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Target entries for a detection-labelled sample.

    Boxes are clamped to the image; boxes left with zero width or height are dropped
    (with their labels and flags).

    Args:
        boxes: [N,4] XYXY pixel coordinates.
        labels: [N] 0-based class indices.
        canvas_size: (H, W) of the image.
        difficult: optional [N] flags.
    """
    height, width = int(canvas_size[0]), int(canvas_size[1])
    boxes_a = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    labels_a = np.asarray(labels, dtype=np.int64).reshape(-1)
    if boxes_a.shape[0] != labels_a.shape[0]:
        raise ValueError(f"{boxes_a.shape[0]} boxes but {labels_a.shape[0]} labels")
    boxes_a[:, 0::2] = boxes_a[:, 0::2].clip(0, width)
    boxes_a[:, 1::2] = boxes_a[:, 1::2].clip(0, height)
    keep = (boxes_a[:, 2] > boxes_a[:, 0]) & (boxes_a[:, 3] > boxes_a[:, 1])
    fields: dict[str, torch.Tensor] = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.from_numpy(np.ascontiguousarray(boxes_a[keep])), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.from_numpy(np.ascontiguousarray(labels_a[keep])),
    }
    if difficult is not None:
        difficult_a = np.asarray(difficult, dtype=bool).reshape(-1)
        if difficult_a.shape[0] != labels_a.shape[0]:
            raise ValueError(f"{difficult_a.shape[0]} difficult flags but {labels_a.shape[0]} labels")
        fields["difficult"] = torch.from_numpy(np.ascontiguousarray(difficult_a[keep]))
    return fields


def mask_field(mask: np.ndarray | torch.Tensor) -> tv_tensors.Mask:
    """Wrap an [H,W] array of class indices (255 = ignore) as a uint8 ``tv_tensors.Mask``."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be [H,W], got shape {array.shape}")
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(array.astype(np.uint8, copy=False))))


class LabelledImageDataset(Dataset):
    """A map-style dataset of (image, target) samples that skips undecodable files.

    Subclasses implement ``__len__`` and ``load_sample(index)`` (the raw sample, before
    ``transforms``; raises :class:`CorruptImageError` for files that do not decode).
    ``__getitem__`` logs a corrupt file once (with its path) and returns the next valid
    sample instead, so an epoch never stops halfway.

    Args:
        transforms: optional callable ``(image, target) -> (image, target)``.
    """

    def __init__(self, transforms: JointTransformFn | None = None) -> None:
        self.transforms = transforms
        self._corrupt_indices: set[int] = set()
        self._reported_paths: set[str] = set()

    def __len__(self) -> int:
        raise NotImplementedError

    def load_sample(self, index: int) -> Sample:
        """The untransformed sample ``index``; raises CorruptImageError for undecodable files."""
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of sample ``index`` before transforms (subclasses may read only a header)."""
        return tuple(self.load_sample(index)[0].shape[-2:])

    def _report_corrupt(self, index: int, err: CorruptImageError) -> None:
        self._corrupt_indices.add(index)
        if err.path not in self._reported_paths:
            self._reported_paths.add(err.path)
            log.warning("%s: skipping sample %d, %s", type(self).__name__, index, err)

    def __getitem__(self, index: int) -> Sample:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {size}")
        index %= size
        for step in range(size):
            candidate = (index + step) % size
            if candidate in self._corrupt_indices:
                continue
            try:
                image, target = self.load_sample(candidate)
            except CorruptImageError as err:
                self._report_corrupt(candidate, err)
                continue
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        raise RuntimeError(f"{type(self).__name__}: no sample could be decoded (all {size} are corrupt)")


class DetectionRecords(LabelledImageDataset):
    """A detection dataset held as ``self.records`` (one tuple per image, the image path at
    position 1) with a ``self.det_mapping``: the length, header-only image sizes and the model
    classes come from there."""

    records: list[tuple]

    @property
    def det_classes(self) -> tuple[str, ...]:
        """The model detection classes the labels index."""
        return self.det_mapping.target_names

    def __len__(self) -> int:
        return len(self.records)

    def image_size(self, index: int) -> tuple[int, int]:
        return read_image_size(self.records[index][1])
