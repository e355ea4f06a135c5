"""bag-info: summarise a bag (storage, duration, topics with type/count/rate, image sizes and
encodings, ground truth present and its classes). ``--json`` prints the same as JSON::

    bag-info demo_bag
    bag-info demo_bag --json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from PIL import Image as PILImage

from mtl_perception.exit_codes import EXIT_BAD_INPUT, EXIT_OK

from .errors import BagError
from .reader import open_rosbag, pick_camera_topic, read_custom_data, storage_of, topic_infos, unreadable_bag
from .topics import (
    CUSTOM_DETECTION_CLASSES,
    CUSTOM_SEGMENTATION_CLASSES,
    GT_DETECTION_LABELS_TOPIC,
    GT_DETECTIONS_TOPIC,
    GT_SEGMENTATION_LABELS_TOPIC,
    GT_SEGMENTATION_TOPIC,
)
from .typestore import COMPRESSED_IMAGE, IMAGE, deserialize, label_info_to_names, stamp_to_ns


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _image_size(message: Any, msgtype: str) -> tuple[str, str]:
    if msgtype == IMAGE:
        return f"{message.width}x{message.height}", message.encoding
    try:
        with PILImage.open(io.BytesIO(bytes(message.data))) as image:
            return f"{image.width}x{image.height}", message.format
    except (OSError, ValueError):
        return "undecodable", message.format


def summarize_bag(path: str | Path, camera_topic: str | None = None) -> dict:
    """Read every message of a bag and summarise it.

    Returns:
        dict with ``path, storage, size_bytes, message_count, start_ns, end_ns, duration_s,
        camera_topic`` (None when the bag has none), ``topics`` (name -> ``type, count,
        rate_hz``), ``images`` (topic -> ``sizes``/``encodings`` counts), ``ground_truth``
        (``detections``: ``frames, boxes, boxes_per_class, classes, aligned_frames``;
        ``segmentation``: ``frames, classes, aligned_frames``) and ``custom_data``.
        ``aligned_frames`` counts ground-truth messages whose header stamp is a camera frame's.

    Raises:
        BagError: the bag is missing, unreadable or empty.
    """
    path = Path(path)
    reader = open_rosbag(path)
    try:
        topics = topic_infos(reader)
        custom = read_custom_data(path) if path.is_dir() else {}
        try:
            camera = pick_camera_topic(path, topics, custom, camera_topic)
        except BagError:
            if camera_topic is not None:
                raise
            camera = None
        times: dict[str, list[int]] = {name: [] for name in topics}
        images: dict[str, dict[str, Counter]] = {}
        camera_stamps: set[int] = set()
        gt_stamps = {GT_DETECTIONS_TOPIC: [], GT_SEGMENTATION_TOPIC: []}
        boxes_per_class: Counter = Counter()
        classes: dict[str, list[str] | None] = {GT_DETECTION_LABELS_TOPIC: None, GT_SEGMENTATION_LABELS_TOPIC: None}
        try:
            for connection, bag_time, rawdata in reader.messages():
                topic, msgtype = connection.topic, connection.msgtype
                times[topic].append(bag_time)
                if msgtype in (IMAGE, COMPRESSED_IMAGE) or topic in gt_stamps or topic in classes:
                    message = deserialize(rawdata, msgtype)
                    if msgtype in (IMAGE, COMPRESSED_IMAGE) and topic != GT_SEGMENTATION_TOPIC:
                        size, encoding = _image_size(message, msgtype)
                        stats = images.setdefault(topic, {"sizes": Counter(), "encodings": Counter()})
                        stats["sizes"][size] += 1
                        stats["encodings"][encoding] += 1
                        if topic == camera:
                            camera_stamps.add(stamp_to_ns(message.header.stamp))
                    if topic in gt_stamps:
                        gt_stamps[topic].append(stamp_to_ns(message.header.stamp))
                    if topic == GT_DETECTIONS_TOPIC:
                        for detection in message.detections:
                            best = max(detection.results, key=lambda r: r.hypothesis.score, default=None)
                            boxes_per_class[best.hypothesis.class_id if best else ""] += 1
                    if topic in classes and classes[topic] is None:
                        classes[topic] = list(label_info_to_names(message))
        except BagError:
            raise
        except Exception as error:
            raise unreadable_bag(path, error, "cannot read messages") from error
        start, end = reader.start_time, reader.end_time
        summary = {
            "path": str(path),
            "storage": storage_of(path),
            "size_bytes": _size_on_disk(path),
            "message_count": reader.message_count,
            "start_ns": start,
            "end_ns": max(start, end - 1),
            "duration_s": max(0, end - 1 - start) / 1e9,
            "camera_topic": camera,
            "topics": {},
            "images": {t: {k: dict(sorted(v.items())) for k, v in s.items()} for t, s in sorted(images.items())},
            "ground_truth": {},
            "custom_data": custom,
        }
    finally:
        reader.close()
    for name in sorted(topics):
        stamps = times[name]
        span = (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else 0.0
        rate = (len(stamps) - 1) / span if span > 0 else None
        summary["topics"][name] = {"type": topics[name].msgtype, "count": len(stamps), "rate_hz": rate}
    if gt_stamps[GT_DETECTIONS_TOPIC] or classes[GT_DETECTION_LABELS_TOPIC]:
        summary["ground_truth"]["detections"] = {
            "frames": len(gt_stamps[GT_DETECTIONS_TOPIC]),
            "boxes": sum(boxes_per_class.values()),
            "boxes_per_class": dict(sorted(boxes_per_class.items())),
            "classes": classes[GT_DETECTION_LABELS_TOPIC] or _custom_list(custom, CUSTOM_DETECTION_CLASSES),
            "aligned_frames": sum(s in camera_stamps for s in gt_stamps[GT_DETECTIONS_TOPIC]),
        }
    if gt_stamps[GT_SEGMENTATION_TOPIC] or classes[GT_SEGMENTATION_LABELS_TOPIC]:
        summary["ground_truth"]["segmentation"] = {
            "frames": len(gt_stamps[GT_SEGMENTATION_TOPIC]),
            "classes": classes[GT_SEGMENTATION_LABELS_TOPIC] or _custom_list(custom, CUSTOM_SEGMENTATION_CLASSES),
            "aligned_frames": sum(s in camera_stamps for s in gt_stamps[GT_SEGMENTATION_TOPIC]),
        }
    return summary


def _custom_list(custom: dict[str, str], key: str) -> list[str] | None:
    try:
        value = json.loads(custom[key])
    except (KeyError, json.JSONDecodeError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{key} x{count}" for key, count in counter.items())


def format_summary(summary: dict) -> str:
    """The human-readable text of :func:`summarize_bag`'s result."""
    lines = [
        f"bag:         {summary['path']}",
        f"storage:     {summary['storage']} ({summary['size_bytes'] / 2**20:.1f} MiB)",
        f"duration:    {summary['duration_s']:.3f} s",
        f"messages:    {summary['message_count']}",
        f"camera:      {summary['camera_topic'] or 'none found'}",
        "topics:",
    ]
    width = max(len(name) for name in summary["topics"])
    type_width = max(len(info["type"]) for info in summary["topics"].values())
    for name, info in summary["topics"].items():
        rate = f"{info['rate_hz']:.2f} Hz" if info["rate_hz"] else "-"
        lines.append(f"  {name:<{width}}  {info['type']:<{type_width}}  {info['count']:>6} msgs  {rate}")
    if summary["images"]:
        lines.append("images:")
        for topic, stats in summary["images"].items():
            lines.append(f"  {topic}: {_counts(stats['encodings'])}; sizes {_counts(stats['sizes'])}")
    truth = summary["ground_truth"]
    lines.append("ground truth:" + ("" if truth else " none"))
    if "detections" in truth:
        det = truth["detections"]
        lines.append(
            f"  detections:   {det['frames']} frames ({det['aligned_frames']} aligned with a camera frame), "
            f"{det['boxes']} boxes, classes {det['classes']}"
        )
    if "segmentation" in truth:
        seg = truth["segmentation"]
        lines.append(
            f"  segmentation: {seg['frames']} frames ({seg['aligned_frames']} aligned with a camera frame), "
            f"classes {seg['classes']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bag-info``; returns the exit status (0, or 2 for a missing/unreadable/corrupt bag)."""
    parser = argparse.ArgumentParser(prog="bag-info", description="Summarise a rosbag2 bag (mcap or sqlite3).")
    parser.add_argument("bag", type=Path, help="bag folder or .mcap/.db3 file")
    parser.add_argument("--camera-topic", help="camera topic (default: found automatically)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        summary = summarize_bag(args.bag, args.camera_topic)
    except BagError as error:  # missing, unreadable or corrupt bag
        print(f"bag-info: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
