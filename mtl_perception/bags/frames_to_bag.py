"""Camera frames and their ground truth -> a new rosbag2 (the writing half of make-bag).

Camera frames go on ``topic`` (``sensor_msgs/Image``, or ``CompressedImage`` on
``<topic>/compressed``) stamped ``start + i / rate``; ground truth goes beside each frame with
the same header and bag time (see :mod:`.topics`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import BagError
from .sources import FrameSource, SourceFrame, resize_frame
from .topics import (
    CUSTOM_CAMERA_TOPIC,
    CUSTOM_DETECTION_CLASSES,
    CUSTOM_SEGMENTATION_CLASSES,
    CUSTOM_SOURCE,
    DEFAULT_CAMERA_TOPIC,
    GT_DETECTION_LABELS_TOPIC,
    GT_DETECTIONS_TOPIC,
    GT_SEGMENTATION_LABELS_TOPIC,
    GT_SEGMENTATION_TOPIC,
    compressed_topic,
)
from .typestore import compressed_image_message, detections_message, image_message, label_info_message, mask_message
from .writer import BagWriter

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 10.0
DEFAULT_FRAME_ID = "camera"
ENCODINGS = ("rgb8", "bgr8")
COMPRESSIONS = ("jpeg", "png")


@dataclass(frozen=True)
class BagSummary:
    """What :func:`write_bag` wrote.

    Attributes:
        path: the bag folder.
        camera_topic: topic of the frames.
        frames: camera frames written.
        detection_frames: frames with ground-truth boxes.
        segmentation_frames: frames with a ground-truth mask.
        start_ns: stamp of the first frame.
        rate_hz: frame rate the stamps follow.
    """

    path: Path
    camera_topic: str
    frames: int
    detection_frames: int
    segmentation_frames: int
    start_ns: int
    rate_hz: float


def frame_stamp_ns(start_ns: int, index: int, rate_hz: float) -> int:
    """Stamp of frame ``index``: ``start + index / rate`` rounded to the nanosecond."""
    return int(start_ns) + round(index * 1e9 / rate_hz)


def _check_ground_truth(frame: SourceFrame, index: int) -> None:
    height, width = frame.image.shape[:2]
    if frame.mask is not None and frame.mask.shape != (height, width):
        raise BagError(f"frame {index} ({frame.name}): mask is {frame.mask.shape}, image is {(height, width)}")
    if frame.boxes is not None and (frame.labels is None or len(frame.labels) != len(frame.boxes)):
        raise BagError(f"frame {index} ({frame.name}): boxes and labels differ in number")


def write_bag(
    frames: FrameSource | Iterable[SourceFrame],
    out_path: str | Path,
    *,
    rate: float | None = None,
    start_ns: int | None = None,
    frame_id: str = DEFAULT_FRAME_ID,
    topic: str = DEFAULT_CAMERA_TOPIC,
    compressed: str | None = None,
    jpeg_quality: int = 90,
    encoding: str = "rgb8",
    storage: str = "mcap",
    max_frames: int | None = None,
    resize: tuple[int, int] | None = None,
    detection_classes: Sequence[str] | None = None,
    segmentation_classes: Sequence[str] | None = None,
    description: str | None = None,
    force: bool = False,
    progress: bool = False,
) -> BagSummary:
    """Write ``frames`` and their ground truth into a new bag at ``out_path`` (atomically).

    Args:
        frames: a :class:`FrameSource` or any iterable of :class:`SourceFrame`.
        out_path: bag folder to create.
        rate: frame rate in Hz (default the source's own, else 10).
        start_ns: stamp of the first frame (default now).
        frame_id: header frame of every message.
        topic: camera topic (raw images).
        compressed: ``'jpeg'`` / ``'png'`` to write ``CompressedImage`` on ``<topic>/compressed``
            instead of raw images.
        jpeg_quality: JPEG quality 1-100.
        encoding: raw image encoding, ``'rgb8'`` or ``'bgr8'``.
        storage: ``'mcap'`` or ``'sqlite3'``.
        max_frames: stop after this many frames.
        resize: ``(width, height)``; 0 for one keeps the aspect ratio. Ground truth is scaled too.
        detection_classes: names box labels index (default the source's).
        segmentation_classes: names mask values index (default the source's).
        description: source description for the metadata (default the source's).
        force: replace an existing bag at ``out_path``.
        progress: show a tqdm progress bar.

    Raises:
        BagError: bad input, an unreadable frame, or an existing output without ``force``; no
            output is left behind.
    """
    rate = float(rate if rate is not None else getattr(frames, "default_rate", None) or DEFAULT_RATE_HZ)
    if not np.isfinite(rate) or rate <= 0:
        raise BagError(f"rate must be a positive number of Hz, got {rate}")
    if compressed is not None and compressed not in COMPRESSIONS:
        raise BagError(f"compressed must be one of {COMPRESSIONS}, got {compressed!r}")
    if encoding not in ENCODINGS:
        raise BagError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if not 1 <= jpeg_quality <= 100:
        raise BagError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if resize is not None and (min(resize) < 0 or max(resize) <= 0):
        raise BagError(f"resize needs width, height >= 0 and not both 0, got {tuple(resize)}")
    if start_ns is not None and start_ns < 0:
        raise BagError(f"the start time must be >= 0, got {start_ns} ns")
    if max_frames is not None and max_frames < 1:
        raise BagError(f"max_frames must be >= 1, got {max_frames}")
    if not topic.startswith("/"):
        topic = "/" + topic
    detection_classes = tuple(detection_classes or getattr(frames, "detection_classes", None) or ()) or None
    segmentation_classes = tuple(segmentation_classes or getattr(frames, "segmentation_classes", None) or ()) or None
    description = description or getattr(frames, "description", "") or "frames"
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    camera_topic = compressed_topic(topic) if compressed else topic

    total = None
    try:
        total = len(frames)  # type: ignore[arg-type]
    except TypeError:
        pass
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames

    counts = {"frames": 0, "det": 0, "seg": 0}
    with BagWriter(out_path, storage=storage, force=force) as bag:
        bag.set_custom_data(CUSTOM_CAMERA_TOPIC, camera_topic)
        bag.set_custom_data(CUSTOM_SOURCE, description)
        for key, labels_topic, names in (
            (CUSTOM_DETECTION_CLASSES, GT_DETECTION_LABELS_TOPIC, detection_classes),
            (CUSTOM_SEGMENTATION_CLASSES, GT_SEGMENTATION_LABELS_TOPIC, segmentation_classes),
        ):
            if names:
                bag.set_custom_data(key, json.dumps(list(names)))
                bag.write_message(labels_topic, label_info_message(names, start_ns, frame_id), start_ns)

        from tqdm import tqdm

        bar = tqdm(total=total, desc="make-bag", unit="frame", disable=not progress, file=sys.stderr)
        try:
            for index, frame in enumerate(frames):
                if max_frames is not None and index >= max_frames:
                    break
                if resize is not None:
                    frame = resize_frame(frame, *resize)
                _check_ground_truth(frame, index)
                stamp = frame_stamp_ns(start_ns, index, rate)
                if compressed:
                    message = compressed_image_message(frame.image, compressed, stamp, frame_id, jpeg_quality)
                else:
                    pixels = frame.image[:, :, ::-1] if encoding == "bgr8" else frame.image
                    message = image_message(np.ascontiguousarray(pixels), encoding, stamp, frame_id)
                bag.write_message(camera_topic, message, stamp)
                if frame.boxes is not None:
                    if detection_classes is None and len(frame.labels):
                        log.warning("no detection class names known; class ids are written as label indices")
                    try:
                        detections = detections_message(
                            frame.boxes, frame.labels, None, stamp, frame_id, class_names=detection_classes
                        )
                    except ValueError as error:
                        raise BagError(f"frame {index} ({frame.name}): {error}") from error
                    bag.write_message(GT_DETECTIONS_TOPIC, detections, stamp)
                    counts["det"] += 1
                if frame.mask is not None:
                    bag.write_message(GT_SEGMENTATION_TOPIC, mask_message(frame.mask, stamp, frame_id), stamp)
                    counts["seg"] += 1
                counts["frames"] += 1
                bar.update(1)
        finally:
            bar.close()
        if counts["frames"] == 0:
            raise BagError(f"{description}: no frames to write")
    return BagSummary(Path(out_path), camera_topic, counts["frames"], counts["det"], counts["seg"], start_ns, rate)
