"""Message types of the replay's topics, and header stamps read by rclpy deserialisation."""

from __future__ import annotations

import importlib
import struct

from mtl_perception.bags.typestore import COMPRESSED_IMAGE, IMAGE, INFERENCE_STATS

DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"
# Both graphs answer a frame with a mask and a detection array; a frame is done when both arrived.
REQUIRED_TOPICS = ("segmentation", "detections")
# Relative output topic → rosbag2 type name (also the rclpy type it is deserialised as).
OUTPUT_TYPES = {"segmentation": IMAGE, "detections": DETECTION_ARRAY, "stats": INFERENCE_STATS, "overlay": IMAGE}


def message_class(type_name: str):
    """``sensor_msgs/msg/Image`` → the rclpy message class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def camera_class(msgtype: str):
    """The rclpy class of a bag's camera type (Image or CompressedImage)."""
    if msgtype not in (IMAGE, COMPRESSED_IMAGE):
        raise ValueError(f"not a camera message type: {msgtype}")
    return message_class(msgtype)


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time → ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_stamp_ns(rawdata: bytes) -> int | None:
    """The header stamp (ns) of a serialised message whose first field is std_msgs/Header, read
    from its CDR bytes without deserialising the rest (an image's pixels); None if not plain CDR.

    CDR: a 4-byte encapsulation header (0x00 0x01 little endian, 0x00 0x00 big endian), then
    ``stamp.sec`` (int32) and ``stamp.nanosec`` (uint32).
    """
    if len(rawdata) < 12 or rawdata[0] != 0 or rawdata[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if rawdata[1] == 1 else ">iI", rawdata, 4)
    return sec * 1_000_000_000 + nanosec


def cdr_with_stamp(rawdata: bytes, stamp: int) -> bytes:
    """The serialised message ``rawdata`` (first field std_msgs/Header, plain CDR, see
    :func:`cdr_stamp_ns`) with its header stamp set to ``stamp`` ns, the rest byte for byte.

    Raises:
        ValueError: ``rawdata`` is not plain CDR.
    """
    if cdr_stamp_ns(rawdata) is None:
        raise ValueError("not a plain-CDR message with a header: cannot set its stamp")
    patched = bytearray(rawdata)
    struct.pack_into("<iI" if rawdata[1] == 1 else ">iI", patched, 4, *divmod(int(stamp), 1_000_000_000))
    return bytes(patched)


def deserialize(rawdata: bytes, message_type):
    """CDR bytes → rclpy message of ``message_type``."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(rawdata, message_type)


def set_stamp(message, stamp: int):
    """Set ``message.header.stamp`` to ``stamp`` ns; returns the message."""
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
    return message
