"""make-bag: write a rosbag2 (mcap or sqlite3) from an image folder, a video or an annotated dataset.

Camera frames go on ``--topic`` (``sensor_msgs/Image``, or ``CompressedImage`` on
``<topic>/compressed`` with ``--compressed``) stamped ``start + i / rate``; ground truth goes
beside each frame with the same header and bag time (see :mod:`.topics`). Examples::

    make-bag out_bag --images frames/ --rate 5
    make-bag out_bag --video flight.mp4 --compressed jpeg --resize 640 0
    make-bag out_bag --dataset deepforest_trees --dataset-option split=heldout
    make-bag out_bag --dataset-config config/datasets/uavid_val.yaml --storage sqlite3
    make-bag out_bag --demo
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import BagError
from .sources import (
    FrameSource,
    ImageFolderSource,
    SourceFrame,
    VideoSource,
    dataset_source,
    load_dataset_config,
    parse_options,
    resize_frame,
)
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
from .writer import STORAGES, BagWriter

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


def _class_list(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    """The make-bag command line."""
    parser = argparse.ArgumentParser(
        prog="make-bag",
        description="Write a rosbag2 (camera frames + time-aligned ground truth) from images, a video or a dataset.",
    )
    parser.add_argument("output", type=Path, help="bag folder to create")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="folder of images (file name order)")
    source.add_argument("--video", type=Path, metavar="FILE", help="video file (OpenCV)")
    source.add_argument("--dataset", metavar="TYPE", help="dataset type for build_dataset, e.g. deepforest_trees, "
                        "solaris_buildings, voc, seg_folder, coco, sdd; options with --dataset-option")
    source.add_argument("--dataset-config", type=Path, metavar="YAML", help="YAML dataset config (mapping with 'type')")
    source.add_argument("--demo", action="store_true", help="the demo bag from packaged aerial sample images")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset argument (YAML value), repeatable, e.g. split=heldout")
    parser.add_argument("--rate", type=float, help=f"frame rate in Hz (default the video's, else {DEFAULT_RATE_HZ:g})")
    parser.add_argument("--start-time", type=float, metavar="SECONDS",
                        help="stamp of the first frame, seconds since the epoch (default now)")
    parser.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help="header frame_id (default %(default)s)")
    parser.add_argument("--topic", default=DEFAULT_CAMERA_TOPIC, help="camera topic (default %(default)s)")
    parser.add_argument("--compressed", choices=COMPRESSIONS,
                        help="write sensor_msgs/CompressedImage on <topic>/compressed instead of raw images")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default %(default)s)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8",
                        help="raw image encoding (default %(default)s)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap",
                        help="storage plugin (default %(default)s)")
    parser.add_argument("--max-frames", type=int, help="write at most this many frames")
    parser.add_argument("--resize", type=int, nargs=2, metavar=("W", "H"),
                        help="resize frames and ground truth (0 for one side keeps the aspect ratio)")
    parser.add_argument("--det-classes", help="comma-separated detection class names (default the dataset's)")
    parser.add_argument("--seg-classes", help="comma-separated segmentation class names (default the dataset's)")
    parser.add_argument("--force", action="store_true", help="replace an existing bag at OUTPUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _source_from_args(args: argparse.Namespace) -> FrameSource:
    if args.dataset_option and not args.dataset:
        raise BagError("--dataset-option needs --dataset")
    det, seg = _class_list(args.det_classes), _class_list(args.seg_classes)
    if args.images is not None:
        return ImageFolderSource(args.images)
    if args.video is not None:
        return VideoSource(args.video)
    if args.dataset is not None:
        cfg = {"type": args.dataset, **parse_options(args.dataset_option)}
        return dataset_source(cfg, f"dataset {args.dataset} {parse_options(args.dataset_option)}", det, seg)
    cfg = load_dataset_config(args.dataset_config)
    return dataset_source(cfg, f"dataset config {args.dataset_config}", det, seg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``make-bag``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="make-bag: %(message)s")
    start_ns = None if args.start_time is None else round(args.start_time * 1e9)
    options = dict(
        rate=args.rate, start_ns=start_ns, frame_id=args.frame_id, topic=args.topic, compressed=args.compressed,
        jpeg_quality=args.jpeg_quality, encoding=args.encoding, storage=args.storage, max_frames=args.max_frames,
        resize=tuple(args.resize) if args.resize else None, force=args.force, progress=not args.quiet,
    )
    try:
        if args.demo:
            from .demo import make_demo_bag

            summary = make_demo_bag(args.output, **{k: v for k, v in options.items() if v is not None})
        else:
            summary = write_bag(
                _source_from_args(args), args.output, detection_classes=_class_list(args.det_classes),
                segmentation_classes=_class_list(args.seg_classes), **options,
            )
    except (BagError, OSError, ValueError) as error:
        print(f"make-bag: error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.path}: {summary.frames} frames on {summary.camera_topic} at {summary.rate_hz:g} Hz, "
        f"ground truth: {summary.detection_frames} with boxes, {summary.segmentation_frames} with masks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
