"""Conversions between image messages and numpy arrays (a cv_bridge replacement).

ROS-free and duck-typed: raw images are any object with ``height, width,
encoding, is_bigendian, step, data`` (``sensor_msgs.msg.Image`` from rclpy and
rosbags' message dataclasses alike); compressed images any object with
``format, data`` or a ``(format, data)`` pair.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

DEFAULT_MAX_PIXELS = 8192 * 8192  # the codec's limit (bag tools)
CAMERA_MAX_PIXELS = 3840 * 2160  # the nodes' default max_input_pixels: a 4K camera


@dataclass(frozen=True)
class _EncodingLayout:
    dtype: type  # numpy type of one channel value
    channels: int


_ENCODINGS = {
    "rgb8": _EncodingLayout(np.uint8, 3),
    "bgr8": _EncodingLayout(np.uint8, 3),
    "rgba8": _EncodingLayout(np.uint8, 4),
    "bgra8": _EncodingLayout(np.uint8, 4),
    "mono8": _EncodingLayout(np.uint8, 1),
    "mono16": _EncodingLayout(np.uint16, 1),
    "8UC1": _EncodingLayout(np.uint8, 1),
    "8UC3": _EncodingLayout(np.uint8, 3),
    "8UC4": _EncodingLayout(np.uint8, 4),
    "16UC1": _EncodingLayout(np.uint16, 1),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)

_COMPRESSED_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


class ImageConversionError(ValueError):
    """An image message or array that cannot be converted; the message says why."""


def _layout(encoding):
    try:
        return _ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)}") from None


def _check_size(height, width, max_pixels):
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ImageConversionError(f"image {name} must be an integer, got {value!r}")
    height, width = int(height), int(width)  # no fixed-width overflow below
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {height}x{width} (height x width)")
    if height * width > max_pixels:
        raise ImageConversionError(
            f"image {height}x{width} has {height * width} pixels, above the limit of "
            f"{max_pixels}")
    return height, width


def _as_byte_array(data):
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_array(msg, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode a raw image message into a new numpy array.

    Args:
        msg: object with ``height, width, encoding, is_bigendian, step, data``.
        max_pixels: reject images with more than this many pixels.

    Returns:
        ``uint8`` or ``uint16`` array (native byte order) of shape (H, W) for
        one-channel encodings, else (H, W, C), channels in the message's order.

    Raises:
        ImageConversionError: unsupported encoding, empty or oversized image,
            ``step`` shorter than a row, or ``data`` not ``step * height`` bytes.
    """
    layout = _layout(msg.encoding)
    height, width = _check_size(msg.height, msg.width, max_pixels)
    step = msg.step
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < row_bytes:
        raise ImageConversionError(
            f"step {step!r} is shorter than one row of {width} {msg.encoding} pixels "
            f"({row_bytes} bytes)")
    step = int(step)
    raw = _as_byte_array(msg.data)
    if raw.size != step * height:
        raise ImageConversionError(
            f"image data has {raw.size} bytes, expected step * height = {step} * {height} "
            f"= {step * height} (truncated or padded message)")
    rows = np.ascontiguousarray(raw.reshape(height, step)[:, :row_bytes])
    wire_dtype = np.dtype(layout.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(wire_dtype).astype(np.dtype(layout.dtype), copy=True)
    if layout.channels == 1:
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, layout.channels)


def _check_array(array, encoding):
    layout = _layout(encoding)
    if not isinstance(array, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.dtype(layout.dtype):
        raise ImageConversionError(
            f"{encoding} needs a {np.dtype(layout.dtype).name} array, got {array.dtype}")
    single_channel = layout.channels == 1 and array.ndim == 2
    if not single_channel and (array.ndim != 3 or array.shape[2] != layout.channels):
        expected = "(H, W)" if layout.channels == 1 else f"(H, W, {layout.channels})"
        raise ImageConversionError(
            f"{encoding} needs an array of shape {expected}, got {array.shape}")
    return layout


def array_to_image_fields(array, encoding, is_bigendian=False, max_pixels=DEFAULT_MAX_PIXELS):
    """Encode an array as the fields of a raw image message (no row padding).

    Args:
        array: (H, W) or (H, W, C) array whose dtype and C fit ``encoding``.
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        is_bigendian: byte order for 16-bit data.
        max_pixels: reject images with more than this many pixels.

    Returns:
        dict with ``height, width, encoding, is_bigendian, step, data`` (bytes).
    """
    layout = _check_array(array, encoding)
    height, width = array.shape[:2]
    _check_size(height, width, max_pixels)
    wire_dtype = np.dtype(layout.dtype).newbyteorder(">" if is_bigendian else "<")
    data = np.ascontiguousarray(array, dtype=wire_dtype).tobytes()
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": int(bool(is_bigendian)),
        "step": int(width * layout.channels * wire_dtype.itemsize),
        "data": data,
    }


def to_rgb(array, encoding):
    """Convert a decoded image to the (H, W, 3) ``uint8`` RGB the networks take.

    mono is replicated to three channels, bgr reordered, alpha dropped, and
    16-bit values scaled from [0, 65535] to [0, 255]. 8UC3/8UC4 are taken as
    RGB(A) since they carry no channel order.
    """
    _check_array(array, encoding)
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    rgb = array[:, :, :3]
    if encoding in ("bgr8", "bgra8"):
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def _compressed_format_problem(fmt):
    """Why a ``CompressedImage.format`` cannot be decoded here, or None."""
    if not isinstance(fmt, str):
        return f"format must be a string, got {type(fmt).__name__}"
    if "compresseddepth" in fmt.lower():
        return (f"format {fmt!r} is compressed_depth_image_transport's (a depth header before the PNG); "
                "only image_transport's jpeg/png is supported")
    return None


def compressed_to_array(msg_or_format_and_bytes, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode a JPEG/PNG compressed image into an (H, W, 3) ``uint8`` RGB array.

    The codec is identified from the data's magic bytes, as image_transport's decoders do:
    ``format`` (e.g. ``'rgb8; jpeg compressed bgr8'``, ``'png'`` or ``''``) is informational, and a
    JPEG labelled ``png`` still decodes as a JPEG. Only a ``compressedDepth`` format is refused,
    since its data is not a plain PNG. The width and height are read from the JPEG/PNG header and
    checked against ``max_pixels`` before any pixel is decompressed, so a small file declaring an
    enormous image (a decompression bomb) is rejected without allocating it.

    Args:
        msg_or_format_and_bytes: object with ``format`` and ``data`` (e.g.
            ``sensor_msgs/CompressedImage``) or a ``(format, data)`` pair.
        max_pixels: reject images that declare more than this many pixels.

    Raises:
        ImageConversionError: no data, not a JPEG/PNG, a compressedDepth format, too many
            pixels, or corrupt data; the message says which (no object reprs).
    """
    if isinstance(msg_or_format_and_bytes, tuple):
        fmt, data = msg_or_format_and_bytes
    else:
        fmt, data = msg_or_format_and_bytes.format, msg_or_format_and_bytes.data
    problem = _compressed_format_problem(fmt)
    if problem:
        raise ImageConversionError(f"compressed image: {problem}")
    payload = _as_byte_array(data).tobytes()
    if not payload:
        raise ImageConversionError(f"compressed image ({fmt!r}) has no data")
    try:
        with PILImage.open(io.BytesIO(payload), formats=("JPEG", "PNG")) as image:
            _check_size(image.height, image.width, max_pixels)  # from the header: nothing decoded yet
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                mono16 = np.asarray(image).astype(np.uint16)
                return to_rgb(mono16, "mono16")
            return np.asarray(image.convert("RGB")).copy()
    except ImageConversionError as error:
        raise ImageConversionError(f"compressed image ({fmt!r}, {len(payload)} bytes): {error}") from None
    except PILImage.UnidentifiedImageError:
        raise ImageConversionError(
            f"compressed image ({fmt!r}, {len(payload)} bytes) is neither JPEG nor PNG "
            f"(first bytes {payload[:8].hex(' ')})") from None
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as error:
        raise ImageConversionError(
            f"cannot decode compressed image ({fmt!r}, {len(payload)} bytes): {error}") from None


def array_to_compressed(array, fmt="jpeg", quality=90):
    """Compress an RGB (H, W, 3) or mono (H, W) ``uint8`` array.

    Args:
        array: image to compress.
        fmt: ``'jpeg'`` or ``'png'``.
        quality: JPEG quality 1-100 (ignored for png).

    Returns:
        ``(format_string, bytes)``; the format string follows image_transport's
        convention, e.g. ``'rgb8; jpeg compressed bgr8'``.
    """
    if fmt not in _COMPRESSED_FORMATS:
        raise ImageConversionError(f"unsupported compression {fmt!r}; use 'jpeg' or 'png'")
    if not 1 <= quality <= 100:
        raise ImageConversionError(f"jpeg quality must be in [1, 100], got {quality}")
    encoding = "mono8" if isinstance(array, np.ndarray) and array.ndim == 2 else "rgb8"
    _check_array(array, encoding)
    _check_size(array.shape[0], array.shape[1], DEFAULT_MAX_PIXELS)
    buffer = io.BytesIO()
    options = {"quality": int(quality)} if _COMPRESSED_FORMATS[fmt] == "JPEG" else {}
    PILImage.fromarray(array).save(buffer, format=_COMPRESSED_FORMATS[fmt], **options)
    canonical = "jpeg" if fmt == "jpg" else fmt
    packed_as = "mono8" if encoding == "mono8" else "bgr8"
    return f"{encoding}; {canonical} compressed {packed_as}", buffer.getvalue()
