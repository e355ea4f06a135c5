"""The faster mask path gives exactly the masks of the straightforward one (full-resolution
bilinear logits, then the first maximum per pixel), computed here independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def _reference(logits: torch.Tensor, size: tuple[int, int], rows=None, cols=None) -> np.ndarray:
    """Crop (letterbox padding), one bilinear resize to the frame size, numpy argmax (first maximum)."""
    if rows is not None:
        logits = logits[..., rows, cols]
    full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].numpy()
    return np.argmax(full, axis=0).astype(np.uint8)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (97, 131)])
def test_masks_equal_the_straightforward_path_on_random_logits(classes, size):
    from mtl_perception.postprocess import segmentation_masks

    logits = torch.randn(1, classes, 40, 40, generator=torch.Generator().manual_seed(size[0] + classes)) * 4
    [mask] = segmentation_masks(logits, [size])
    np.testing.assert_array_equal(mask.numpy(), _reference(logits, size))


def test_ties_go_to_the_first_class_as_before():
    """Equal logits (integers, so the bilinear values are equal too) are class 0, as torch.max's
    first-maximum rule gives."""
    from mtl_perception.postprocess import segmentation_masks

    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, :, 4:] = 3.0  # class 1 on the right half, ties (0 vs 0) on the left
    logits[0, 0, :4, 4:] = 3.0  # ties (3 vs 3) top right
    [mask] = segmentation_masks(logits, [(64, 64)])
    expected = _reference(logits, (64, 64))
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert mask[:, :16].max() == 0 and mask[:16, 48:].max() == 0 and mask[48:, 48:].min() == 1


def test_nan_or_huge_logits_take_the_general_path():
    from mtl_perception.postprocess import segmentation_masks

    logits = torch.randn(1, 2, 10, 10, generator=torch.Generator().manual_seed(3))
    logits[0, 1, 2, 2] = float("nan")
    [mask] = segmentation_masks(logits, [(50, 50)])
    previous = F.interpolate(logits, size=(50, 50), mode="bilinear", align_corners=False)[0].max(dim=0).indices
    np.testing.assert_array_equal(mask.numpy(), previous.to(torch.uint8).numpy())
    assert (mask == 1).sum() > (logits[0, 1] > logits[0, 0]).sum()  # NaN counts as the maximum, as before


def test_letterboxed_masks_equal_the_straightforward_path():
    from mtl_perception.letterbox import resize_geometry
    from mtl_perception.postprocess import segmentation_masks

    geometry = resize_geometry((720, 1280), (320, 320), "letterbox")
    logits = torch.randn(1, 2, 320, 320, generator=torch.Generator().manual_seed(5))
    [mask] = segmentation_masks(logits, [geometry])
    rows, cols = geometry.content_slices
    np.testing.assert_array_equal(mask.numpy(), _reference(logits, (720, 1280), rows, cols))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_demo_model_predicts_the_masks_of_the_straightforward_path(backend):
    """The shipped two-class demo model, both engines, 640x480 and 1280x720: Predictor.predict's
    mask equals the reference path applied to the network's own logits."""
    from mtl_perception.models.nets import SEG_LOGITS
    from mtl_perception.predictor_settings import predictor_from_parameters
    from mtl_perception.ros.paths import resolve_package_path

    predictor = predictor_from_parameters({"checkpoint": str(resolve_package_path("checkpoints/demo_multitask.pt")),
                                           "device": "cpu", "backend": backend})
    assert len(predictor.class_names["segmentation"]) == 2
    rng = np.random.default_rng(0)
    for height, width in ((480, 640), (720, 1280)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image[height // 4: height // 2] = (30, 140, 40)
        with torch.inference_mode():
            logits = predictor.forward(predictor.preprocess(image))[SEG_LOGITS]
        np.testing.assert_array_equal(predictor.predict(image).mask, _reference(logits, (height, width)))
