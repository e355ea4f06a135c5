"""Letterbox / stretch geometry against hand-computed placements, boxes and maps."""

import numpy as np
import pytest
import torch

from mtl_perception.letterbox import (
    ResizeGeometry,
    boxes_to_input,
    boxes_to_original,
    pad_value,
    resize_geometry,
    resize_to_input,
    resize_to_original,
)
from mtl_perception.models.config import ModelConfig


def test_letterbox_of_a_16_9_frame_into_a_square():
    # 1280x720 into 512x512: scale min(512/720, 512/1280) = 0.4 -> 512x288, 112 rows of padding above.
    geometry = resize_geometry((720, 1280), (512, 512), "letterbox")
    assert geometry == ResizeGeometry((720, 1280), (512, 512), (288, 512), 112, 0)
    assert geometry.scale_x == pytest.approx(0.4) and geometry.scale_y == pytest.approx(0.4)
    assert geometry.content_slices == (slice(112, 400), slice(0, 512))


def test_letterbox_of_a_portrait_frame_pads_left_and_right():
    # 300x600 (H x W = 600x300) into 256x256: scale 256/600 -> 256x128, 64 columns each side.
    assert resize_geometry((600, 300), (256, 256), "letterbox") == ResizeGeometry((600, 300), (256, 256), (256, 128), 0, 64)


def test_odd_padding_puts_the_extra_pixel_at_the_bottom():
    # 100x300 into 64x64: scale 64/300 -> 21.33 rows round to 21; 43 rows of padding: 21 above, 22 below.
    geometry = resize_geometry((100, 300), (64, 64), "letterbox")
    assert geometry.content_size == (21, 64) and geometry.pad_top == 21 and geometry.pad_left == 0


def test_stretch_scales_each_axis_on_its_own():
    geometry = resize_geometry((720, 1280), (512, 512), "stretch")
    assert geometry == ResizeGeometry((720, 1280), (512, 512), (512, 512), 0, 0)
    assert geometry.scale_y == pytest.approx(512 / 720) and geometry.scale_x == pytest.approx(0.4)


def test_bad_mode_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_geometry((10, 10), (32, 32), "crop")
    with pytest.raises(ValueError, match="positive"):
        resize_geometry((0, 10), (32, 32), "letterbox")


def test_boxes_map_to_the_input_and_back_on_numpy_and_torch():
    geometry = resize_geometry((720, 1280), (512, 512), "letterbox")
    original = np.array([[100.0, 50.0, 300.0, 250.0], [0.0, 0.0, 1280.0, 720.0]], dtype=np.float32)
    # x * 0.4, y * 0.4 + 112
    expected_input = np.array([[40.0, 132.0, 120.0, 212.0], [0.0, 112.0, 512.0, 400.0]], dtype=np.float32)
    np.testing.assert_allclose(boxes_to_input(original, geometry), expected_input, atol=1e-4)
    np.testing.assert_allclose(boxes_to_original(expected_input, geometry), original, atol=1e-3)
    as_tensor = boxes_to_original(torch.from_numpy(expected_input), geometry)
    assert isinstance(as_tensor, torch.Tensor)
    torch.testing.assert_close(as_tensor, torch.from_numpy(original), atol=1e-3, rtol=0)
    assert expected_input[0, 0] == 40.0  # the input array is not modified


def test_boxes_over_the_padding_are_clipped_to_the_frame():
    geometry = resize_geometry((720, 1280), (512, 512), "letterbox")
    # From row 100 (in the top padding) to row 150: original y from 0 (clipped from -30) to (150-112)/0.4 = 95.
    out = boxes_to_original(np.array([[10.0, 100.0, 20.0, 150.0]]), geometry)
    np.testing.assert_allclose(out, [[25.0, 0.0, 50.0, 95.0]], atol=1e-4)
    unclipped = boxes_to_original(np.array([[10.0, 100.0, 20.0, 150.0]]), geometry, clip=False)
    assert unclipped[0, 1] == pytest.approx(-30.0)


def test_resize_to_input_pads_with_the_fill_and_keeps_pixels():
    # 2x4 into 4x4: scale 1, no resampling; rows 0 and 3 are padding.
    image = torch.arange(24, dtype=torch.uint8).reshape(1, 3, 2, 4)
    geometry = resize_geometry((2, 4), (4, 4), "letterbox")
    out = resize_to_input(image, geometry, fill=(7, 8, 9))
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 1:3], image[0].float())
    for channel, value in enumerate((7.0, 8.0, 9.0)):
        assert torch.all(out[0, channel, 0] == value) and torch.all(out[0, channel, 3] == value)


def test_resize_to_input_nearest_keeps_label_values_and_dtype():
    mask = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.uint8)  # 2x2 into 4x8: scale 2 -> 4x4, 2 columns each side
    geometry = resize_geometry((2, 2), (4, 8), "letterbox")
    out = resize_to_input(mask, geometry, fill=255, interpolation="nearest")
    expected = torch.tensor([[255, 255, 1, 1, 2, 2, 255, 255]] * 2 + [[255, 255, 3, 3, 4, 4, 255, 255]] * 2,
                            dtype=torch.uint8)
    assert out.dtype == torch.uint8
    torch.testing.assert_close(out[0, 0], expected)


def test_resize_to_original_crops_the_padding_then_resizes():
    # A 2x4 frame letterboxed into 8x8: scale 2 -> 4x8 content in rows 2..5.
    geometry = resize_geometry((2, 4), (8, 8), "letterbox")
    maps = torch.full((1, 1, 8, 8), 100.0)  # padding holds a value that must not leak in
    maps[0, 0, 2:4] = 1.0
    maps[0, 0, 4:6] = 5.0
    out = resize_to_original(maps, geometry)
    # Bilinear 4 -> 2 rows samples source rows 0.5 and 2.5: (1 + 1) / 2 and (5 + 5) / 2.
    torch.testing.assert_close(out, torch.tensor([[[[1.0] * 4, [5.0] * 4]]]))


def test_pad_value_is_the_mean_pixel():
    assert pad_value((0.485, 0.456, 0.406)) == (124, 116, 104)


def test_model_config_records_the_resize_mode_and_defaults_to_stretch():
    assert ModelConfig().resize == "stretch"
    data = ModelConfig(resize="letterbox").to_dict()
    assert data["resize"] == "letterbox" and ModelConfig.from_dict(data).resize == "letterbox"
    del data["resize"]  # a checkpoint written before the field existed
    assert ModelConfig.from_dict(data).resize == "stretch"
    with pytest.raises(ValueError, match="resize must be one of"):
        ModelConfig(resize="pad")


def test_stretched_maps_of_any_resolution_resize_straight_to_the_original():
    geometry = resize_geometry((4, 6), (32, 32), "stretch")
    maps = torch.tensor([[[[1.0, 3.0]]]])  # 1x2 scores over the whole input
    out = resize_to_original(maps, geometry)
    # Columns sample source x = (i + 0.5) * 2 / 6 - 0.5, clamped at 0: 1, 1, 1 + 2/3 * 2 ... by hand:
    expected_row = torch.tensor([1.0, 1.0, 5 / 3, 7 / 3, 3.0, 3.0])
    torch.testing.assert_close(out, expected_row.expand(1, 1, 4, 6))
    with pytest.raises(ValueError, match="letterboxed input needs them at the input size"):
        resize_to_original(maps, resize_geometry((4, 6), (32, 32), "letterbox"))
