"""sensor_msgs Image/CompressedImage <-> numpy, on top of :mod:`mtl_perception.image_msg_codec`."""

from sensor_msgs.msg import CompressedImage, Image

from mtl_perception.image_msg_codec import array_to_compressed, array_to_image_fields


def array_to_image_msg(array, encoding, header=None):
    """Build a ``sensor_msgs/Image`` from an array.

    Args:
        array: (H, W) or (H, W, C) array matching ``encoding`` (see image_msg_codec).
        encoding: e.g. ``'rgb8'``, ``'mono16'``.
        header: ``std_msgs/Header`` to copy (stamp and frame_id), or None.
    """
    msg = Image(**array_to_image_fields(array, encoding))
    if header is not None:
        msg.header = header
    return msg


def array_to_compressed_msg(array, header=None, fmt="jpeg", quality=90):
    """Build a ``sensor_msgs/CompressedImage`` from an RGB (H, W, 3) or mono (H, W) uint8 array."""
    format_string, data = array_to_compressed(array, fmt=fmt, quality=quality)
    msg = CompressedImage(format=format_string, data=data)
    if header is not None:
        msg.header = header
    return msg
