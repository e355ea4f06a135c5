"""A rosbags typestore with our interfaces, and builders/decoders of the messages the bags hold.

The typestore is ROS 2 Kilted's (``sensor_msgs``, ``std_msgs``, ``geometry_msgs``, ...) plus
``vision_msgs`` (the 4.x subset in ``vision_msgs_twin/msg``) and
``mtl_perception/msg/InferenceStats``, registered from the project's own ``.msg`` files: the
installed copies under ``mtl_perception/interfaces/msg/{vision_msgs,mtl_perception}/`` or, when
running from a checkout, ``vision_msgs_twin/msg`` and ``msg``.

Messages built here are rosbags dataclasses; :func:`serialize` turns them into the CDR bytes
that ``rclpy.serialization`` and rosbag2 use.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from mtl_perception.image_msg_codec import array_to_compressed, array_to_image_fields
from mtl_perception.vision_labels import detections_to_arrays, label_info_to_names  # noqa: F401 (bags API)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"
LABEL_INFO = "vision_msgs/msg/LabelInfo"
INFERENCE_STATS = "mtl_perception/msg/InferenceStats"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

_PACKAGE_DIR = Path(__file__).parent.parent  # not resolved: a symlink install keeps its interfaces/ here
_INTERFACE_PACKAGES = ("vision_msgs", "mtl_perception")


def interface_dirs() -> dict[str, Path]:
    """Folders of the ``.msg`` files to register, by ROS package name.

    Looks in the installed package's ``interfaces/msg/<package>/`` first, then in the source
    checkout (``vision_msgs_twin/msg``, ``msg``).

    Raises:
        FileNotFoundError: neither place holds the ``.msg`` files (names both).
    """
    installed = {name: _PACKAGE_DIR / "interfaces" / "msg" / name for name in _INTERFACE_PACKAGES}
    checkout_root = _PACKAGE_DIR.resolve().parent
    checkout = {"vision_msgs": checkout_root / "vision_msgs_twin" / "msg", "mtl_perception": checkout_root / "msg"}
    for candidate in (installed, checkout):
        if all(folder.is_dir() and any(folder.glob("*.msg")) for folder in candidate.values()):
            return candidate
    searched = ", ".join(str(p) for p in [*installed.values(), *checkout.values()])
    raise FileNotFoundError(
        f"interface definitions (.msg files of vision_msgs and mtl_perception) not found; searched {searched}. "
        "Reinstall the package (pip install . or colcon build) so that mtl_perception/interfaces is present."
    )


@lru_cache(maxsize=1)
def bag_typestore() -> Typestore:
    """The ROS 2 Kilted typestore with vision_msgs and mtl_perception messages registered (cached)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for package, folder in interface_dirs().items():
        for msg_file in sorted(folder.glob("*.msg")):
            try:
                types.update(get_types_from_msg(msg_file.read_text(encoding="utf-8"), f"{package}/msg/{msg_file.stem}"))
            except Exception as error:  # rosbags raises its own parser errors
                raise ValueError(f"{msg_file}: cannot parse message definition: {error}") from error
    store.register(types)
    return store


def serialize(message: Any, typestore: Typestore | None = None) -> bytes:
    """CDR bytes (little endian, as rosbag2 and rclpy write them) of a rosbags message."""
    store = typestore or bag_typestore()
    return bytes(store.serialize_cdr(message, message.__msgtype__))


def deserialize(rawdata: bytes | memoryview, msgtype: str, typestore: Typestore | None = None) -> Any:
    """Decode CDR bytes of ``msgtype`` (e.g. ``'sensor_msgs/msg/Image'``) into a rosbags message."""
    return (typestore or bag_typestore()).deserialize_cdr(rawdata, msgtype)


def _type(name: str):
    return bag_typestore().types[name]


def header(stamp_ns: int, frame_id: str = "") -> Any:
    """``std_msgs/Header`` for a time in nanoseconds (must be >= 0)."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"stamp must be >= 0 ns, got {stamp_ns}")
    time = _type("builtin_interfaces/msg/Time")(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return _type("std_msgs/msg/Header")(stamp=time, frame_id=str(frame_id))


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (``sec``, ``nanosec``)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_message(array: np.ndarray, encoding: str = "rgb8", stamp_ns: int = 0, frame_id: str = "") -> Any:
    """``sensor_msgs/Image`` holding ``array`` unchanged.

    Args:
        array: (H, W) or (H, W, C) array matching ``encoding`` (channels already in that order).
        encoding: e.g. ``'rgb8'``, ``'bgr8'``, ``'mono8'``, ``'mono16'``.
        stamp_ns: header stamp in nanoseconds.
        frame_id: header frame.
    """
    fields = array_to_image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return _type(IMAGE)(header=header(stamp_ns, frame_id), **fields)


def compressed_image_message(
    array: np.ndarray, fmt: str = "jpeg", stamp_ns: int = 0, frame_id: str = "", quality: int = 90
) -> Any:
    """``sensor_msgs/CompressedImage`` of an RGB (H, W, 3) or mono (H, W) uint8 array.

    Args:
        array: the image.
        fmt: ``'jpeg'`` or ``'png'``.
        stamp_ns: header stamp in nanoseconds.
        frame_id: header frame.
        quality: JPEG quality 1-100.
    """
    format_string, data = array_to_compressed(array, fmt=fmt, quality=quality)
    return _type(COMPRESSED_IMAGE)(
        header=header(stamp_ns, frame_id), format=format_string, data=np.frombuffer(data, dtype=np.uint8)
    )


def mask_message(mask: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> Any:
    """A class-index mask [H, W] (uint8; 255 = ignore) as a ``mono8`` ``sensor_msgs/Image``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"mask values must fit in uint8, got range [{mask.min()}, {mask.max()}]")
        mask = mask.astype(np.uint8)
    return image_message(mask, "mono8", stamp_ns, frame_id)


def _class_ids(labels: Sequence[Any], class_names: Sequence[str] | None) -> list[str]:
    ids = []
    for label in labels:
        if isinstance(label, (str, np.str_)):
            ids.append(str(label))
            continue
        index = int(label)
        if class_names is None:
            ids.append(str(index))
        elif 0 <= index < len(class_names):
            ids.append(str(class_names[index]))
        else:
            raise ValueError(f"label {index} is outside the {len(class_names)} class names {list(class_names)}")
    return ids


def detections_message(
    boxes_xyxy: np.ndarray,
    labels: Sequence[Any],
    scores: Sequence[float] | None = None,
    stamp_ns: int = 0,
    frame_id: str = "",
    class_names: Sequence[str] | None = None,
) -> Any:
    """``vision_msgs/Detection2DArray`` (vision_msgs 4.x layout), one hypothesis per detection.

    Args:
        boxes_xyxy: [N, 4] pixel boxes (x1, y1, x2, y2); stored as ``bbox.center.position.x/y``
            and ``size_x/size_y``.
        labels: [N] class names, or class indices (turned into ``class_names[i]`` when
            ``class_names`` is given, else into the index as a string).
        scores: [N] confidences (default 1.0 each, as for ground truth).
        stamp_ns: header stamp of the array and of every detection.
        frame_id: header frame.
        class_names: names that integer labels index.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    ids = _class_ids(list(labels), class_names)
    confidences = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(ids) == len(confidences) == len(boxes):
        raise ValueError(f"{len(boxes)} boxes, {len(ids)} labels and {len(confidences)} scores must match")
    msg_header = header(stamp_ns, frame_id)
    point_2d, pose_2d = _type("vision_msgs/msg/Point2D"), _type("vision_msgs/msg/Pose2D")
    bbox_2d, hypothesis_type = _type("vision_msgs/msg/BoundingBox2D"), _type("vision_msgs/msg/ObjectHypothesis")
    with_pose = _type("vision_msgs/msg/ObjectHypothesisWithPose")
    pose_cov, pose, point, quaternion = (
        _type("geometry_msgs/msg/PoseWithCovariance"),
        _type("geometry_msgs/msg/Pose"),
        _type("geometry_msgs/msg/Point"),
        _type("geometry_msgs/msg/Quaternion"),
    )
    detection_type = _type("vision_msgs/msg/Detection2D")
    detections = []
    for (x1, y1, x2, y2), class_id, score in zip(boxes, ids, confidences):
        bbox = bbox_2d(
            center=pose_2d(position=point_2d(x=(x1 + x2) / 2, y=(y1 + y2) / 2), theta=0.0),
            size_x=float(x2 - x1),
            size_y=float(y2 - y1),
        )
        result = with_pose(
            hypothesis=hypothesis_type(class_id=class_id, score=float(score)),
            pose=pose_cov(
                pose=pose(position=point(x=0.0, y=0.0, z=0.0), orientation=quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36, dtype=np.float64),
            ),
        )
        detections.append(detection_type(header=msg_header, results=[result], bbox=bbox, id=""))
    return _type(DETECTION_2D_ARRAY)(header=msg_header, detections=detections)


def label_info_message(
    class_names: Sequence[str], stamp_ns: int = 0, frame_id: str = "", threshold: float = 0.0
) -> Any:
    """``vision_msgs/LabelInfo`` mapping class index ``i`` to ``class_names[i]`` (see :mod:`mtl_perception.vision_labels`)."""
    vision_class = _type("vision_msgs/msg/VisionClass")
    class_map = [vision_class(class_id=i, class_name=str(name)) for i, name in enumerate(class_names)]
    return _type(LABEL_INFO)(header=header(stamp_ns, frame_id), class_map=class_map, threshold=float(threshold))
