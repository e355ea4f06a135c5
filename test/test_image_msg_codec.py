"""image_msg_codec: raw and compressed image messages <-> numpy, and rejection of bad input."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from mtl_perception.image_msg_codec import (SUPPORTED_ENCODINGS, ImageConversionError,
                                        array_to_compressed, array_to_image_fields,
                                        compressed_to_array, image_to_array, to_rgb)

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1,
            "8UC1": 1, "8UC3": 3, "8UC4": 4, "16UC1": 1}


def random_image(encoding, height=5, width=7, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if encoding in ("mono16", "16UC1") else np.uint8
    shape = (height, width) if CHANNELS[encoding] == 1 else (height, width, CHANNELS[encoding])
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def padded_message(array, encoding, padding, is_bigendian=False, pad_byte=0xAB):
    """Raw image message whose rows carry ``padding`` extra bytes."""
    fields = array_to_image_fields(array, encoding, is_bigendian=is_bigendian)
    rows = np.frombuffer(fields["data"], np.uint8).reshape(fields["height"], fields["step"])
    pad = np.full((fields["height"], padding), pad_byte, np.uint8)
    fields["data"] = np.hstack([rows, pad]).tobytes()
    fields["step"] += padding
    return SimpleNamespace(**fields)


def test_supported_encodings_are_the_documented_ones():
    assert set(SUPPORTED_ENCODINGS) == set(CHANNELS)


@pytest.mark.parametrize("encoding", sorted(CHANNELS))
@pytest.mark.parametrize("is_bigendian", [False, True])
@pytest.mark.parametrize("padding", [0, 3])
def test_round_trip_every_encoding(encoding, is_bigendian, padding):
    array = random_image(encoding)
    msg = padded_message(array, encoding, padding, is_bigendian)
    decoded = image_to_array(msg)
    assert decoded.dtype == array.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable and decoded.flags.c_contiguous


def test_byte_order_of_16_bit_data_is_honoured():
    wire = SimpleNamespace(height=1, width=2, encoding="mono16", step=4,
                           data=bytes([0x01, 0x02, 0xFF, 0x00]), is_bigendian=1)
    np.testing.assert_array_equal(image_to_array(wire), [[0x0102, 0xFF00]])
    wire.is_bigendian = 0
    np.testing.assert_array_equal(image_to_array(wire), [[0x0201, 0x00FF]])


def test_fields_describe_the_wire_layout():
    fields = array_to_image_fields(np.array([[258, 1]], np.uint16), "16UC1", is_bigendian=True)
    assert fields == {"height": 1, "width": 2, "encoding": "16UC1", "is_bigendian": 1,
                      "step": 4, "data": bytes([1, 2, 0, 1])}
    rgb = array_to_image_fields(np.zeros((2, 3, 3), np.uint8), "rgb8")
    assert (rgb["step"], len(rgb["data"])) == (9, 18)


def test_padding_bytes_are_not_part_of_the_image():
    msg = SimpleNamespace(height=2, width=1, encoding="mono8", is_bigendian=0, step=4,
                          data=bytes([7, 99, 99, 99, 8, 99, 99, 99]))
    np.testing.assert_array_equal(image_to_array(msg), [[7], [8]])


def test_to_rgb_channel_orders_and_scaling():
    bgr = np.array([[[10, 20, 30]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(bgr, "bgr8"), [[[30, 20, 10]]])
    bgra = np.array([[[10, 20, 30, 40]]], np.uint8)
    np.testing.assert_array_equal(to_rgb(bgra, "bgra8"), [[[30, 20, 10]]])
    np.testing.assert_array_equal(to_rgb(bgra, "rgba8"), [[[10, 20, 30]]])
    np.testing.assert_array_equal(to_rgb(np.array([[5, 6]], np.uint8), "mono8"),
                                  [[[5, 5, 5], [6, 6, 6]]])
    mono16 = np.array([[0, 257, 32896, 65535]], np.uint16)
    rgb = to_rgb(mono16, "mono16")
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 128, 255]])
    assert to_rgb(random_image("rgb8"), "rgb8").shape == (5, 7, 3)


@pytest.mark.parametrize("change, message", [
    ({"encoding": "yuv422"}, "unsupported image encoding 'yuv422'"),
    ({"step": 20}, "step 20 is shorter than one row"),
    ({"data": bytes(3 * 21 - 1)}, "expected step * height = 21 * 3 = 63"),
    ({"data": bytes(3 * 21 + 5)}, "has 68 bytes"),
    ({"height": 0, "data": b""}, "empty image"),
    ({"width": 0}, "empty image"),
    ({"height": 2.5}, "height must be an integer"),
])
def test_rejects_malformed_messages(change, message):
    msg = SimpleNamespace(height=3, width=7, encoding="rgb8", is_bigendian=0, step=21,
                          data=bytes(63))
    image_to_array(msg)
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(ImageConversionError, match=message.replace("*", r"\*")):
        image_to_array(msg)


def test_rejects_images_above_the_pixel_limit():
    msg = SimpleNamespace(**array_to_image_fields(np.zeros((10, 10), np.uint8), "mono8"))
    assert image_to_array(msg, max_pixels=100).shape == (10, 10)
    with pytest.raises(ImageConversionError, match="100 pixels, above the limit of 99"):
        image_to_array(msg, max_pixels=99)
    # 65536 * 65536 wraps to 0 in uint32 arithmetic; the limit must still hold.
    huge = SimpleNamespace(height=np.uint32(65536), width=np.uint32(65536), encoding="mono8",
                           is_bigendian=0, step=np.uint32(65536), data=b"")
    with pytest.raises(ImageConversionError, match="4294967296 pixels, above the limit"):
        image_to_array(huge)


@pytest.mark.parametrize("array, encoding, message", [
    (np.zeros((2, 2, 3), np.uint16), "rgb8", "rgb8 needs a uint8 array"),
    (np.zeros((2, 2, 4), np.uint8), "rgb8", r"shape \(H, W, 3\)"),
    (np.zeros((2, 2, 3), np.uint8), "mono8", r"shape \(H, W\)"),
    (np.zeros((0, 2), np.uint8), "mono8", "empty image"),
    ([[1, 2]], "mono8", "expected a numpy array"),
])
def test_array_to_image_fields_rejects_mismatched_arrays(array, encoding, message):
    with pytest.raises(ImageConversionError, match=message):
        array_to_image_fields(array, encoding)


def smooth_rgb(height=32, width=48):
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 7, cols * 5, (rows + cols) * 3], axis=-1).astype(np.uint8)


def test_png_round_trip_is_exact_and_jpeg_is_close():
    image = smooth_rgb()
    fmt, data = array_to_compressed(image, "png")
    assert fmt == "rgb8; png compressed bgr8" and data[:4] == b"\x89PNG"
    np.testing.assert_array_equal(compressed_to_array((fmt, data)), image)

    fmt, data = array_to_compressed(image, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8" and data[:2] == b"\xff\xd8"
    decoded = compressed_to_array(SimpleNamespace(format=fmt, data=data))
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image).mean() < 3.0


def test_mono_compression_and_16_bit_png():
    mono = smooth_rgb()[..., 0]
    fmt, data = array_to_compressed(mono, "png")
    assert fmt.startswith("mono8; png")
    np.testing.assert_array_equal(compressed_to_array((fmt, data)), np.repeat(mono[..., None], 3, 2))

    buffer = io.BytesIO()
    PILImage.fromarray(np.array([[0, 65535]], np.uint16)).save(buffer, format="PNG")
    np.testing.assert_array_equal(compressed_to_array(("16UC1; png compressed", buffer.getvalue())),
                                  [[[0, 0, 0], [255, 255, 255]]])


def test_compressed_rejects_bad_input():
    with pytest.raises(ImageConversionError, match=r"is neither JPEG nor PNG \(first bytes 6e 6f 74 20 61 6e 20 69\)"):
        compressed_to_array(("jpeg", b"not an image at all"))
    _, jpeg = array_to_compressed(smooth_rgb(), "jpeg")
    with pytest.raises(ImageConversionError, match=f"cannot decode compressed image \\('jpeg', 200 bytes\\)"):
        compressed_to_array(("jpeg", jpeg[:200]))
    with pytest.raises(ImageConversionError, match="has no data"):
        compressed_to_array(("jpeg", b""))
    _, png = array_to_compressed(np.zeros((10, 10, 3), np.uint8), "png")
    with pytest.raises(ImageConversionError, match="above the limit of 50"):
        compressed_to_array(("png", png), max_pixels=50)
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(buffer, format="BMP")
    with pytest.raises(ImageConversionError, match="neither JPEG nor PNG"):
        compressed_to_array(("bmp", buffer.getvalue()))
    with pytest.raises(ImageConversionError, match="unsupported compression 'tiff'"):
        array_to_compressed(np.zeros((2, 2, 3), np.uint8), "tiff")
    with pytest.raises(ImageConversionError, match="quality"):
        array_to_compressed(np.zeros((2, 2, 3), np.uint8), "jpeg", quality=0)


@pytest.mark.parametrize("encoding", ["rgb8", "mono16"])
def test_rosbags_messages_through_cdr(encoding):
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    array = random_image(encoding, seed=3)
    padded = padded_message(array, encoding, padding=2, is_bigendian=True)
    msg = Image(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="cam"),
                height=padded.height, width=padded.width, encoding=encoding,
                is_bigendian=padded.is_bigendian, step=padded.step,
                data=np.frombuffer(padded.data, np.uint8))
    raw = store.serialize_cdr(msg, Image.__msgtype__)
    np.testing.assert_array_equal(image_to_array(store.deserialize_cdr(raw, Image.__msgtype__)),
                                  array)

    truncated = store.deserialize_cdr(raw, Image.__msgtype__)
    truncated.data = truncated.data[:-1]
    with pytest.raises(ImageConversionError, match="truncated"):
        image_to_array(truncated)


@pytest.mark.parametrize("encoding", sorted(CHANNELS))
def test_rclpy_image_messages(encoding):
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mtl_perception.ros.image_msg_builders import array_to_image_msg

    array = random_image(encoding, seed=5)
    header = Header(stamp=Time(sec=12, nanosec=34), frame_id="camera_optical")
    msg = array_to_image_msg(array, encoding, header)
    assert isinstance(msg, Image)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == \
        ("camera_optical", 12, 34)
    np.testing.assert_array_equal(image_to_array(msg), array)

    padded = padded_message(array, encoding, padding=4, is_bigendian=True)
    np.testing.assert_array_equal(image_to_array(Image(**vars(padded))), array)
    with pytest.raises(ImageConversionError, match="truncated"):
        image_to_array(Image(**{**vars(padded), "data": padded.data[:-2]}))


def test_rclpy_compressed_messages_and_cdr_from_rosbags():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    from rclpy.serialization import deserialize_message
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Image

    from mtl_perception.ros.image_msg_builders import array_to_compressed_msg

    image = smooth_rgb(8, 6)
    msg = array_to_compressed_msg(image, fmt="png")
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_array(msg), image)

    # A frame serialized by rosbags (as when replaying a bag) decodes in rclpy.
    store = get_typestore(Stores.ROS2_KILTED)
    RosbagsImage = store.types["sensor_msgs/msg/Image"]
    fields = array_to_image_fields(image, "bgr8")
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    raw = store.serialize_cdr(
        RosbagsImage(header=store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
            **fields), RosbagsImage.__msgtype__)
    decoded = image_to_array(deserialize_message(bytes(raw), Image))
    np.testing.assert_array_equal(to_rgb(decoded, "bgr8"), image[:, :, ::-1])


def _all_zero_png(width, height):
    buffer = io.BytesIO()
    PILImage.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_decompression_bomb_is_rejected_from_its_header_before_decoding(monkeypatch):
    bomb = _all_zero_png(8000, 8000)  # ~60 KB declaring 64 MP (192 MB as RGB)
    assert len(bomb) < 100_000
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    with pytest.raises(ImageConversionError, match="image 8000x8000 has 64000000 pixels, above the limit of 8294400"):
        compressed_to_array(("png", bomb), max_pixels=3840 * 2160)
    assert loads == [], "nothing was decompressed"
    assert compressed_to_array(("png", _all_zero_png(64, 32)), max_pixels=3840 * 2160).shape == (32, 64, 3)
    assert set(loads) == {(64, 32)}, "the small image is decoded (the counter sees decoding)"


def test_the_format_field_is_informational_and_the_magic_bytes_decide():
    image = smooth_rgb()
    _, jpeg = array_to_compressed(image, "jpeg", quality=80)
    _, png = array_to_compressed(image, "png")
    as_jpeg = compressed_to_array(("rgb8; jpeg compressed bgr8", jpeg))
    for label in ("png", "", "rgb8; png compressed bgr8"):
        np.testing.assert_array_equal(compressed_to_array((label, jpeg)), as_jpeg)
    np.testing.assert_array_equal(compressed_to_array(("jpeg", png)), image)
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        compressed_to_array(("16UC1; compressedDepth png", png))
    with pytest.raises(ImageConversionError, match="format must be a string"):
        compressed_to_array((None, png))


def test_decode_errors_carry_no_object_reprs():
    for data in (b"GIF89a not really", b"\xff\xd8\xff\xe0 broken jpeg", _all_zero_png(8, 8)[:40]):
        with pytest.raises(ImageConversionError) as error:
            compressed_to_array(("png", data))
        assert " at 0x" not in str(error.value) and "<_io" not in str(error.value), str(error.value)
