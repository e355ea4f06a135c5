"""Reading bags for replay evaluation: validated opening, camera frames in order, ground truth by
header stamp and the class lists (ROS-free, on rosbags).

Example::

    with BagReader("demo_bag") as bag:
        boxes_by_stamp = bag.ground_truth_detections()
        for frame in bag.frames():
            truth = boxes_by_stamp.get(frame.stamp_ns)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import yaml
from rosbags.rosbag2 import Reader

from mtl_perception.image_msg_codec import ImageConversionError, compressed_to_array, image_to_array, to_rgb
from mtl_perception.vision_labels import detection_labels, detections_to_arrays, label_info_to_names

from .errors import BagError
from .topics import (
    CUSTOM_CAMERA_TOPIC,
    CUSTOM_DETECTION_CLASSES,
    CUSTOM_SEGMENTATION_CLASSES,
    DEFAULT_CAMERA_TOPIC,
    GROUND_TRUTH_PREFIX,
    GT_DETECTION_LABELS_TOPIC,
    GT_DETECTIONS_TOPIC,
    GT_SEGMENTATION_LABELS_TOPIC,
    GT_SEGMENTATION_TOPIC,
)
from .typestore import (
    COMPRESSED_IMAGE,
    DETECTION_2D_ARRAY,
    IMAGE,
    IMAGE_TYPES,
    LABEL_INFO,
    deserialize,
    stamp_to_ns,
)

BAG_FILE_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its message type and number of messages."""

    msgtype: str
    count: int


@dataclass(frozen=True)
class CameraFrame:
    """One camera message of a bag.

    Attributes:
        stamp_ns: header stamp (ns).
        bag_time_ns: time it was recorded in the bag (ns).
        rawdata: the CDR bytes as stored (publish them to replay the frame).
        msgtype: ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``.
        image: decoded (H, W, 3) uint8 RGB image, or None when not decoded.
        frame_id: header frame.
        encoding: the Image encoding, or the CompressedImage format string.
    """

    stamp_ns: int
    bag_time_ns: int
    rawdata: bytes
    msgtype: str
    image: np.ndarray | None
    frame_id: str
    encoding: str


@dataclass(frozen=True)
class GroundTruthBoxes:
    """Ground-truth boxes of one frame.

    Attributes:
        boxes: [N, 4] float32 XYXY pixels.
        labels: [N] int64 indices into the bag's detection classes (-1 where the class id is
            not among them).
        class_ids: the N class ids as stored (class names).
        frame_id: header frame.
    """

    boxes: np.ndarray
    labels: np.ndarray
    class_ids: tuple[str, ...]
    frame_id: str


def unreadable_bag(path: Path, error: Exception, what: str = "cannot be read") -> BagError:
    """The BagError for a bag whose storage fails to open or read, naming the underlying error."""
    return BagError(f"bag {path}: {what}, corrupt or truncated? ({type(error).__name__}: {error})")


def _bag_file_in(directory: Path) -> Path | None:
    files = sorted(p for p in directory.iterdir() if p.suffix in BAG_FILE_SUFFIXES and p.is_file())
    return files[0] if len(files) == 1 else None


def open_rosbag(path: str | Path) -> Reader:
    """Open a rosbag2 bag (a bag folder, or a single ``.mcap``/``.db3`` file) with rosbags.

    A folder without ``metadata.yaml`` holding exactly one ``.mcap``/``.db3`` file is read from
    that file.

    Returns:
        an open ``rosbags.rosbag2.Reader`` (close it when done).

    Raises:
        BagError: the path is missing, not a bag, unreadable/corrupt, or holds no messages.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path}: path does not exist")
    target = path
    if path.is_dir():
        try:
            if not any(path.iterdir()):
                raise BagError(f"bag {path}: empty directory, not a rosbag2 bag")
            if not (path / "metadata.yaml").is_file():
                target = _bag_file_in(path)
        except OSError as error:
            raise BagError(f"bag {path}: cannot list the directory: {error}") from error
        if target is None:
            raise BagError(f"bag {path}: not a rosbag2 bag (no metadata.yaml and not exactly one .mcap/.db3 file)")
    elif path.suffix not in BAG_FILE_SUFFIXES:
        raise BagError(f"bag {path}: not a bag (expected a bag folder or a {'/'.join(BAG_FILE_SUFFIXES)} file)")
    try:
        reader = Reader(target)
        reader.open()
    except Exception as error:
        raise unreadable_bag(path, error) from error
    if reader.message_count == 0:
        reader.close()
        raise BagError(f"bag {path}: contains no messages")
    return reader


def read_custom_data(path: str | Path) -> dict[str, str]:
    """The ``custom_data`` of a bag folder's ``metadata.yaml`` ({} when there is none)."""
    metadata = Path(path) / "metadata.yaml"
    if not metadata.is_file():
        return {}
    try:
        info = yaml.safe_load(metadata.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise BagError(f"bag {path}: cannot parse {metadata}: {error}") from error
    custom = (info.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
    return {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}


def pick_camera_topic(
    path: Path, topics: dict[str, TopicInfo], custom_data: dict[str, str], requested: str | None = None
) -> str:
    """The camera topic of a bag: ``requested``, else the one named in its metadata, else
    ``/camera/image_raw``, else its only Image/CompressedImage topic outside ``/ground_truth/``.

    Raises:
        BagError: that topic is missing, ambiguous, not an image type or empty (lists the topics).
    """
    images = sorted(t for t, info in topics.items() if info.msgtype in IMAGE_TYPES)
    listing = f"image topics: {images or 'none'}; all topics: {sorted(topics)}"
    if requested is None:
        requested = custom_data.get(CUSTOM_CAMERA_TOPIC)
    if requested is None:
        if DEFAULT_CAMERA_TOPIC in topics:
            requested = DEFAULT_CAMERA_TOPIC
        else:
            cameras = [t for t in images if not t.startswith(GROUND_TRUTH_PREFIX)]
            if len(cameras) != 1:
                why = "has no camera topic" if not cameras else "has several camera topics; choose one"
                raise BagError(f"bag {path}: {why} ({listing})")
            requested = cameras[0]
    if requested not in topics:
        raise BagError(f"bag {path}: camera topic {requested!r} not found ({listing})")
    if topics[requested].msgtype not in IMAGE_TYPES:
        raise BagError(
            f"bag {path}: camera topic {requested!r} has type {topics[requested].msgtype}, "
            f"expected one of {IMAGE_TYPES}"
        )
    if topics[requested].count == 0:
        raise BagError(f"bag {path}: camera topic {requested!r} has no messages")
    return requested


def topic_infos(reader: Reader) -> dict[str, TopicInfo]:
    """Message type and count of every topic of an open reader."""
    return {name: TopicInfo(info.msgtype or "", info.msgcount) for name, info in reader.topics.items()}


def storage_of(path: Path) -> str:
    """``'mcap'`` or ``'sqlite3'`` for a bag folder or file (``'unknown'`` otherwise)."""
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.suffix in BAG_FILE_SUFFIXES]
    suffixes = {p.suffix for p in files}
    return {".mcap": "mcap", ".db3": "sqlite3"}.get(suffixes.pop(), "unknown") if len(suffixes) == 1 else "unknown"


class BagReader:
    """A validated bag with a camera topic.

    Args:
        path: bag folder or ``.mcap``/``.db3`` file.
        camera_topic: the camera topic; default the one named in the bag's metadata, else
            ``/camera/image_raw``, else the bag's only Image/CompressedImage topic outside
            ``/ground_truth/``.

    Raises:
        BagError: see :func:`open_rosbag`; also when the camera topic is missing, ambiguous,
            not an image type, or has no messages.
    """

    def __init__(self, path: str | Path, camera_topic: str | None = None) -> None:
        self.path = Path(path)
        self._reader = open_rosbag(self.path)
        try:
            self.custom_data = read_custom_data(self.path) if self.path.is_dir() else {}
            self.topics = topic_infos(self._reader)
            self.camera_topic = pick_camera_topic(self.path, self.topics, self.custom_data, camera_topic)
            self.camera_msgtype = self.topics[self.camera_topic].msgtype
        except BaseException:
            self._reader.close()
            raise
        self._classes: dict[str, tuple[str, ...] | None] | None = None

    @property
    def start_ns(self) -> int:
        """Bag time of the first message (ns)."""
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        """Bag time just after the last message (ns; rosbags' convention: last + 1)."""
        return self._reader.end_time

    @property
    def duration_ns(self) -> int:
        """Time between the first and last message (ns)."""
        return max(0, self._reader.end_time - 1 - self._reader.start_time)

    @property
    def message_count(self) -> int:
        """Messages in the bag, all topics."""
        return self._reader.message_count

    @property
    def frame_count(self) -> int:
        """Messages on the camera topic."""
        return self.topics[self.camera_topic].count

    @property
    def storage(self) -> str:
        """``'mcap'`` or ``'sqlite3'``."""
        return storage_of(self.path)

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, bag_time_ns, rawdata)`` of the given topics (default all) in bag-time order."""
        wanted = None if topics is None else set(topics)
        connections = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        try:
            for connection, bag_time, rawdata in self._reader.messages(connections=connections):
                yield connection.topic, connection.msgtype, bag_time, bytes(rawdata)
        except BagError:
            raise
        except Exception as error:
            raise unreadable_bag(self.path, error, "cannot read messages") from error

    def _decode(self, rawdata: bytes, msgtype: str, topic: str, bag_time: int) -> Any:
        try:
            return deserialize(rawdata, msgtype)
        except Exception as error:
            raise BagError(
                f"bag {self.path}: {topic} message at {bag_time} ns does not decode as {msgtype}: {error}"
            ) from error

    def frames(self, decode: bool = True) -> Iterator[CameraFrame]:
        """Camera frames in bag-time order; ``decode=False`` leaves ``image`` None (faster)."""
        for topic, msgtype, bag_time, rawdata in self.messages([self.camera_topic]):
            message = self._decode(rawdata, msgtype, topic, bag_time)
            encoding = message.encoding if msgtype == IMAGE else message.format
            image = None
            if decode:
                try:
                    if msgtype == COMPRESSED_IMAGE:
                        image = compressed_to_array(message)
                    else:
                        image = to_rgb(image_to_array(message), message.encoding)
                except ImageConversionError as error:
                    raise BagError(f"bag {self.path}: {topic} frame at {bag_time} ns: {error}") from error
            yield CameraFrame(
                stamp_ns=stamp_to_ns(message.header.stamp),
                bag_time_ns=bag_time,
                rawdata=rawdata,
                msgtype=msgtype,
                frame_id=message.header.frame_id,
                encoding=encoding,
                image=image,
            )

    def _by_stamp(self, topic: str, expected_type: str) -> Iterator[tuple[int, Any]]:
        if topic not in self.topics:
            return
        if self.topics[topic].msgtype != expected_type:
            raise BagError(f"bag {self.path}: {topic} has type {self.topics[topic].msgtype}, expected {expected_type}")
        seen: set[int] = set()
        for _, msgtype, bag_time, rawdata in self.messages([topic]):
            message = self._decode(rawdata, msgtype, topic, bag_time)
            stamp = stamp_to_ns(message.header.stamp)
            if stamp in seen:
                raise BagError(f"bag {self.path}: two {topic} messages have header stamp {stamp} ns")
            seen.add(stamp)
            yield stamp, message

    def ground_truth_detections(self) -> dict[int, GroundTruthBoxes]:
        """Ground-truth boxes by header stamp (ns); frames not labelled for detection are absent."""
        truth = {}
        for stamp, message in self._by_stamp(GT_DETECTIONS_TOPIC, DETECTION_2D_ARRAY):
            boxes, class_ids, _ = detections_to_arrays(message)
            labels = detection_labels(class_ids, self.detection_classes or ())
            truth[stamp] = GroundTruthBoxes(boxes.astype(np.float32), labels, tuple(class_ids), message.header.frame_id)
        return truth

    def ground_truth_masks(self) -> dict[int, np.ndarray]:
        """Ground-truth masks ([H, W] uint8 class indices, 255 = ignore) by header stamp (ns)."""
        truth = {}
        for stamp, message in self._by_stamp(GT_SEGMENTATION_TOPIC, IMAGE):
            if message.encoding not in ("mono8", "8UC1"):
                raise BagError(
                    f"bag {self.path}: {GT_SEGMENTATION_TOPIC} has encoding {message.encoding}, expected mono8"
                )
            try:
                truth[stamp] = image_to_array(message)
            except ImageConversionError as error:
                raise BagError(f"bag {self.path}: {GT_SEGMENTATION_TOPIC} at stamp {stamp} ns: {error}") from error
        return truth

    def _load_classes(self) -> dict[str, tuple[str, ...] | None]:
        if self._classes is None:
            classes: dict[str, tuple[str, ...] | None] = {}
            for task, topic, key in (
                ("detection", GT_DETECTION_LABELS_TOPIC, CUSTOM_DETECTION_CLASSES),
                ("segmentation", GT_SEGMENTATION_LABELS_TOPIC, CUSTOM_SEGMENTATION_CLASSES),
            ):
                classes[task] = None
                if topic in self.topics:
                    for stamp, message in self._by_stamp(topic, LABEL_INFO):
                        try:
                            classes[task] = label_info_to_names(message)
                        except ValueError as error:
                            raise BagError(f"bag {self.path}: {topic}: {error}") from error
                        break
                elif key in self.custom_data:
                    try:
                        names = json.loads(self.custom_data[key])
                    except json.JSONDecodeError as error:
                        raise BagError(f"bag {self.path}: metadata {key} is not a JSON list: {error}") from error
                    classes[task] = tuple(str(n) for n in names)
            self._classes = classes
        return self._classes

    @property
    def detection_classes(self) -> tuple[str, ...] | None:
        """Detection class names of the ground truth (None when the bag names none)."""
        return self._load_classes()["detection"]

    @property
    def segmentation_classes(self) -> tuple[str, ...] | None:
        """Segmentation class names (mask value i = name i; None when the bag names none)."""
        return self._load_classes()["segmentation"]

    def close(self) -> None:
        """Close the underlying reader."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_bag(path: str | Path, camera_topic: str | None = None) -> BagReader:
    """Open and validate a bag for replay; see :class:`BagReader`."""
    return BagReader(path, camera_topic)
