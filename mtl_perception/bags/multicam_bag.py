"""Several camera bags -> one bag with one image topic per camera (input of multi-camera replays).

    make-bag rig_bag --merge-cameras /front/image=front_bag /down/image=down_bag

Each source bag's camera frames (see :class:`~mtl_perception.bags.reader.BagReader`) go on its
topic, in their order and with their spacing, their stamps (and bag times) shifted so every camera
starts at ``start_ns``; frame_id and pixels are kept. Ground truth is not carried over. The bag's
metadata lists the camera topics (``mtl_perception.camera_topics``, a JSON list); the first is also
its ``mtl_perception.camera_topic``, so single-camera tools read that one.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
from pathlib import Path
from typing import Iterator

from .errors import BagError
from .reader import open_bag
from .topics import CUSTOM_CAMERA_TOPIC, CUSTOM_SOURCE
from .typestore import deserialize, header
from .writer import BagWriter

CUSTOM_CAMERA_TOPICS = "mtl_perception.camera_topics"


def parse_camera_sources(items: list[str]) -> dict[str, Path]:
    """``['/front/image=bag_a', ...]`` -> {topic: bag path}; BagError for a malformed or repeated topic."""
    cameras: dict[str, Path] = {}
    for item in items:
        topic, sep, path = item.partition("=")
        if not sep or not topic or not path:
            raise BagError(f"camera source {item!r} is not TOPIC=BAG")
        topic = topic if topic.startswith("/") else "/" + topic
        if topic in cameras:
            raise BagError(f"camera topic {topic} is given twice")
        cameras[topic] = Path(path)
    if not cameras:
        raise BagError("no camera sources given")
    return cameras


def _shifted_frames(topic: str, bag: Path, start_ns: int) -> Iterator[tuple[int, str, str, object]]:
    with open_bag(bag) as reader:
        first = None
        for frame in reader.frames(decode=False):
            first = frame.stamp_ns if first is None else first
            message = deserialize(frame.rawdata, frame.msgtype)
            stamp = start_ns + frame.stamp_ns - first
            yield stamp, topic, frame.msgtype, dataclasses.replace(message, header=header(stamp, message.header.frame_id))


def merge_camera_bags(cameras: dict[str, Path], out_path: str | Path, *, start_ns: int | None = None,
                      storage: str = "mcap", force: bool = False) -> dict[str, int]:
    """Write every camera's frames into one new bag at ``out_path`` (atomically), in stamp order.

    Args:
        cameras: output topic -> source bag (its camera topic is read).
        out_path: bag folder to create.
        start_ns: stamp of every camera's first frame (default now).
        storage: ``'mcap'`` or ``'sqlite3'``.
        force: replace an existing bag at ``out_path``.

    Returns:
        frames written per topic.

    Raises:
        BagError: a source that cannot be read, or an existing output without ``force``; nothing is left behind.
    """
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    counts = {topic: 0 for topic in cameras}
    streams = [_shifted_frames(topic, bag, start_ns) for topic, bag in cameras.items()]
    with BagWriter(out_path, storage=storage, force=force) as writer:
        writer.set_custom_data(CUSTOM_CAMERA_TOPICS, json.dumps(list(cameras)))
        writer.set_custom_data(CUSTOM_CAMERA_TOPIC, next(iter(cameras)))
        writer.set_custom_data(CUSTOM_SOURCE, "cameras: " + ", ".join(f"{t} from {b}" for t, b in cameras.items()))
        for stamp, topic, _, message in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            writer.write_message(topic, message, stamp)
            counts[topic] += 1
    return counts


def camera_topics(bag: str | Path) -> list[str] | None:
    """The camera topics a merged bag lists, or None for a single-camera bag."""
    from .reader import read_custom_data

    path = Path(bag)
    listed = read_custom_data(path).get(CUSTOM_CAMERA_TOPICS) if path.is_dir() else None
    return json.loads(listed) if listed else None
