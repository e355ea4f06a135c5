"""make-bag: write a rosbag2 (mcap or sqlite3) from an image folder, a video or an annotated dataset.

Camera frames go on ``--topic`` (``sensor_msgs/Image``, or ``CompressedImage`` on
``<topic>/compressed`` with ``--compressed``) stamped ``start + i / rate``; ground truth goes
beside each frame with the same header and bag time (see :mod:`.topics`). Examples::

    make-bag out_bag --images frames/ --rate 5
    make-bag out_bag --video flight.mp4 --compressed jpeg --resize 640 0
    make-bag out_bag --dataset deepforest_trees --dataset-option split=heldout
    make-bag out_bag --dataset-config config/datasets/uavid_val.yaml --storage sqlite3
    make-bag out_bag --demo
    make-bag rig_bag --merge-cameras /front/image=front_bag /down/image=down_bag
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from mtl_perception.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from .demo import make_demo_bag
from .multicam_bag import merge_camera_bags, parse_camera_sources
from .errors import BagError
from .frames_to_bag import (  # noqa: F401 (write_bag, frame_stamp_ns: the library API, also importable from here)
    COMPRESSIONS,
    DEFAULT_FRAME_ID,
    DEFAULT_RATE_HZ,
    ENCODINGS,
    BagSummary,
    frame_stamp_ns,
    write_bag,
)
from .sources import FrameSource, ImageFolderSource, VideoSource, dataset_source, load_dataset_config, parse_options
from .topics import DEFAULT_CAMERA_TOPIC
from .writer import STORAGES


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
    source.add_argument("--merge-cameras", nargs="+", metavar="TOPIC=BAG",
                        help="one bag with an image topic per camera, from camera bags (see bags/multicam_bag.py)")
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
    """Entry point of ``make-bag``; returns the exit status (0 written, 1 writing failed, 2 bad arguments or
    input; see :mod:`mtl_perception.exit_codes`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="make-bag: %(message)s")
    start_ns = None if args.start_time is None else round(args.start_time * 1e9)
    options = dict(
        rate=args.rate, start_ns=start_ns, frame_id=args.frame_id, topic=args.topic, compressed=args.compressed,
        jpeg_quality=args.jpeg_quality, encoding=args.encoding, storage=args.storage, max_frames=args.max_frames,
        resize=tuple(args.resize) if args.resize else None, force=args.force, progress=not args.quiet,
    )
    try:
        if args.merge_cameras:
            counts = merge_camera_bags(parse_camera_sources(args.merge_cameras), args.output, start_ns=start_ns,
                                       storage=args.storage, force=args.force)
            print(f"wrote {args.output}: " + ", ".join(f"{n} frames on {t}" for t, n in counts.items()))
            return EXIT_OK
        if args.demo:
            summary = make_demo_bag(args.output, **{k: v for k, v in options.items() if v is not None})
        else:
            summary = write_bag(
                _source_from_args(args), args.output, detection_classes=_class_list(args.det_classes),
                segmentation_classes=_class_list(args.seg_classes), **options,
            )
    except (BagError, FileNotFoundError, ValueError) as error:  # bad arguments or input; nothing written
        print(f"make-bag: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # writing failed (disk full, permissions); nothing left behind
        print(f"make-bag: error: writing {args.output} failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"wrote {summary.path}: {summary.frames} frames on {summary.camera_topic} at {summary.rate_hz:g} Hz, "
        f"ground truth: {summary.detection_frames} with boxes, {summary.segmentation_frames} with masks"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
