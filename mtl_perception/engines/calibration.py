"""Calibration frames for int8: real camera frames from a rosbag or an image folder.

Frames are read with the project's own readers (:class:`~mtl_perception.bags.reader.BagReader`
for a bag, :class:`~mtl_perception.bags.sources.ImageFolderSource` for a folder), ``count``
of them spread evenly over the source, and kept as the uint8 RGB frames the camera gave: the
quantizer preprocesses them with the Predictor itself. The digest covers the chosen frames'
pixels, so an engine cache entry changes when the calibration data does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

DEFAULT_CALIBRATION_FRAMES = 32


class CalibrationError(ValueError):
    """The calibration source cannot be read or holds no usable frame; the message says which."""


@dataclass(frozen=True)
class CalibrationSet:
    """Frames ([H, W, 3] uint8 RGB), where they came from and a digest of their pixels."""

    frames: tuple[np.ndarray, ...]
    source: str
    total: int  # frames the source holds (``frames`` is an even spread of them)

    @property
    def digest(self) -> str:
        sha = hashlib.sha256()
        for frame in self.frames:
            sha.update(repr(frame.shape).encode())
            sha.update(np.ascontiguousarray(frame).tobytes())
        return sha.hexdigest()

    def describe(self) -> str:
        return f"{len(self.frames)} of {self.total} frames of {self.source}"


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included (all when fewer)."""
    if total <= count:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({int(round(i * (total - 1) / (count - 1))) for i in range(count)})


def calibration_set(source: str | os.PathLike, count: int = DEFAULT_CALIBRATION_FRAMES,
                    camera_topic: str | None = None) -> CalibrationSet:
    """Up to ``count`` frames of a rosbag (folder, ``.mcap`` or ``.db3``) or an image folder.

    Raises:
        CalibrationError: a missing source, an unreadable bag or image, or no frame at all.
    """
    if count < 1:
        raise CalibrationError(f"calibration frames must be >= 1, got {count}")
    path = Path(source)
    if not path.exists():
        raise CalibrationError(f"calibration source {path} not found (give a rosbag or a folder of images)")
    if path.is_dir() and not _is_bag(path):
        return _folder_set(path, count)
    return _bag_set(path, count, camera_topic)


def frames_set(frames: Iterable[np.ndarray], source: str, count: int = DEFAULT_CALIBRATION_FRAMES) -> CalibrationSet:
    """A calibration set from frames already in memory (e.g. a dataset's images), spread as above."""
    frames = list(frames)
    if not frames:
        raise CalibrationError(f"calibration source {source} holds no frame")
    return CalibrationSet(tuple(frames[i] for i in spread(len(frames), count)), source, len(frames))


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3"))


def _folder_set(folder: Path, count: int) -> CalibrationSet:
    from ..bags.errors import BagError
    from ..bags.sources import ImageFolderSource

    try:
        source = ImageFolderSource(folder)
        total = len(source)
        source.files = [source.files[index] for index in spread(total, count)]  # decode only those
        frames = [frame.image for frame in source]
    except BagError as exc:
        raise CalibrationError(f"calibration: {exc}") from exc
    return CalibrationSet(tuple(frames), source.description, total)


def _bag_set(path: Path, count: int, camera_topic: str | None) -> CalibrationSet:
    from ..bags.errors import BagError
    from ..bags.reader import BagReader

    try:
        with BagReader(path, camera_topic) as bag:
            total = bag.frame_count
            chosen = set(spread(total, count))
            # The reader decodes every frame (raw frames cost a reshape); only the chosen are kept.
            frames = [frame.image for index, frame in enumerate(bag.frames(decode=True)) if index in chosen]
            topic = bag.camera_topic
    except BagError as exc:
        raise CalibrationError(f"calibration bag: {exc}") from exc
    if not frames:
        raise CalibrationError(f"calibration bag {path} holds no camera frame")
    return CalibrationSet(tuple(frames), f"rosbag {path} ({topic})", total)


def aerial_training_set(count: int = DEFAULT_CALIBRATION_FRAMES) -> CalibrationSet:
    """The demo models' training tiles (:func:`~mtl_perception.data.aerial_sample_splits`: the
    deepforest and solaris ``train`` tiles), never the held-out tiles the demo and bench score."""
    from ..data.aerial import aerial_sample_splits

    splits = aerial_sample_splits()
    frames = [np.ascontiguousarray(dataset[index][0].permute(1, 2, 0).numpy())
              for dataset in (splits.det_train, splits.seg_train) for index in range(len(dataset))]
    return frames_set(frames, "the demo models' training tiles (deepforest and solaris train splits)", count)
