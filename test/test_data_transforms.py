"""Joint augmentation: boxes, mask and image stay aligned through every geometric op."""

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtl_perception.data.base import detection_fields, mask_field
from mtl_perception.data.transforms import AugmentationConfig, JointTransform, RandomRot90, build_transforms

HEIGHT, WIDTH = 120, 160
BOXES = [(10, 10, 50, 40), (70, 15, 110, 60), (120, 20, 150, 100), (20, 60, 60, 110)]
BACKGROUND = (50, 50, 50)
COLORS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (250, 250, 20)]
FILL = (124, 116, 104)
TOL = 2


def make_sample(with_boxes=True, with_mask=True):
    """Image with coloured boxes; the mask holds label+1 inside box `label`, 0 elsewhere."""
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for label, ((x0, y0, x1, y1), color) in enumerate(zip(BOXES, COLORS)):
        image[y0:y1, x0:x1] = color
        mask[y0:y1, x0:x1] = label + 1
    target = {"image_id": "synthetic"}
    if with_boxes:
        labels = np.arange(len(BOXES))
        target.update(detection_fields(np.array(BOXES), labels, (HEIGHT, WIDTH), difficult=labels % 2 == 1))
    if with_mask:
        target["mask"] = mask_field(mask)
    return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()), target


def assert_aligned(image, target, check_colors=True):
    """Each kept box encloses exactly its object's mask pixels (within TOL) and its colour."""
    mask = target["mask"].numpy()
    height, width = mask.shape
    assert tuple(image.shape[-2:]) == (height, width)
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 4, 255}
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert tuple(boxes.canvas_size) == (height, width)
    assert len(boxes) == len(target["labels"]) == len(target["difficult"])
    assert torch.equal(target["difficult"], target["labels"] % 2 == 1)
    pixels = image.permute(1, 2, 0).numpy().astype(int)
    for (x0, y0, x1, y1), label in zip(boxes.tolist(), target["labels"].tolist()):
        value = label + 1
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        ys, xs = np.nonzero(mask == value)
        assert len(ys) > 0, f"box of label {label} kept but its object is gone from the mask"
        assert ys.min() >= y0 - TOL and ys.max() + 1 <= y1 + TOL, (label, (y0, y1), (ys.min(), ys.max()))
        assert xs.min() >= x0 - TOL and xs.max() + 1 <= x1 + TOL, (label, (x0, x1), (xs.min(), xs.max()))
        inner = (slice(math.ceil(y0) + TOL, math.floor(y1) - TOL), slice(math.ceil(x0) + TOL, math.floor(x1) - TOL))
        if mask[inner].size:
            assert (mask[inner] == value).all(), f"pixels inside box {label} belong to another class"
            if check_colors:
                assert np.abs(pixels[inner] - np.array(COLORS[label])).max() <= 3
    if check_colors:
        background = mask == 0
        if background.any():
            assert np.abs(np.median(pixels[background], axis=0) - BACKGROUND).max() <= 3
        filled = mask == 255
        if filled.sum() > 50:
            assert np.abs(np.median(pixels[filled], axis=0) - FILL).max() <= 3


SANITIZE = v2.SanitizeBoundingBoxes(labels_getter=lambda s: (s[1]["labels"], s[1]["difficult"]))
GEOMETRIC_OPS = {
    "zoom_out": v2.RandomZoomOut(fill={tv_tensors.Image: FILL, tv_tensors.Mask: 255}, side_range=(1.0, 4.0), p=1.0),
    "iou_crop": v2.RandomIoUCrop(),
    "resized_crop": v2.RandomResizedCrop((90, 110), scale=(0.09, 1.0), ratio=(0.5, 2.0)),
    "hflip": v2.RandomHorizontalFlip(p=1.0),
    "vflip": v2.RandomVerticalFlip(p=1.0),
    "resize": v2.Resize((300, 300)),
    "rot90": RandomRot90(),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC_OPS))
def test_each_geometric_op_keeps_boxes_mask_and_image_aligned(name):
    op = GEOMETRIC_OPS[name]
    torch.manual_seed(0)
    kept = 0
    for _ in range(40):
        image, target = SANITIZE(*op(*make_sample()))
        assert_aligned(image, target)
        kept += len(target["boxes"])
    assert kept > 0


def test_hflip_moves_box_and_mask_to_mirrored_position():
    image, target = v2.RandomHorizontalFlip(p=1.0)(*make_sample())
    assert target["boxes"][0].tolist() == [WIDTH - 50, 10, WIDTH - 10, 40]
    assert (target["mask"][10:40, WIDTH - 50 : WIDTH - 10] == 1).all()
    assert (target["mask"][:, :WIDTH - 50] == 1).sum() == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_turns_box_and_mask_counter_clockwise_by_hand_computed_corners(k, monkeypatch):
    # Box 0 is x 10..50, y 10..40 in a WIDTH x HEIGHT frame. Counter-clockwise by 90 degrees
    # (x, y) -> (y, WIDTH - x); by 180 -> (WIDTH - x, HEIGHT - y); by 270 -> (HEIGHT - y, x).
    x0, y0, x1, y1 = BOXES[0]
    expected = {1: [y0, WIDTH - x1, y1, WIDTH - x0],
                2: [WIDTH - x1, HEIGHT - y1, WIDTH - x0, HEIGHT - y0],
                3: [HEIGHT - y1, x0, HEIGHT - y0, x1]}[k]
    monkeypatch.setattr(RandomRot90, "make_params", lambda self, flat: {"angle": 90.0 * k})
    image, target = RandomRot90()(*make_sample())
    size = (HEIGHT, WIDTH) if k == 2 else (WIDTH, HEIGHT)
    assert tuple(image.shape[-2:]) == size and tuple(target["mask"].shape) == size
    assert target["boxes"][0].tolist() == expected
    ex0, ey0, ex1, ey1 = expected
    assert (target["mask"][ey0:ey1, ex0:ex1] == 1).all() and (target["mask"] == 1).sum() == (x1 - x0) * (y1 - y0)
    assert_aligned(image, target)


def test_grayscale_makes_three_equal_channels_and_keeps_the_labels():
    transform = build_transforms(AugmentationConfig(photometric=False, zoom_out=False, crop=False, hflip=False,
                                                    grayscale_p=1.0, input_size=(HEIGHT, WIDTH)))
    image, target = transform(*make_sample())
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    # ITU-R 601 luma of box 0's colour (250, 20, 20): 0.2989 * 250 + 0.587 * 20 + 0.114 * 20 = 88.7.
    assert abs(int(image[0, 20, 20]) - 88.7) <= 1
    assert target["boxes"].tolist() == [list(map(float, box)) for box in BOXES]
    assert torch.equal(target["mask"], make_sample()[1]["mask"])
    with pytest.raises(ValueError, match="grayscale_p"):
        AugmentationConfig(grayscale_p=2.0)


def test_rot90_draws_each_quarter_turn():
    torch.manual_seed(0)
    angles = [RandomRot90().make_params([])["angle"] for _ in range(400)]
    counts = [angles.count(90.0 * k) for k in range(4)]
    assert sum(counts) == 400 and min(counts) > 70  # each ~100 of 400 (binomial sd ~9)


def test_zoom_out_fills_mask_with_ignore_and_image_with_mean():
    torch.manual_seed(1)
    transform = build_transforms(AugmentationConfig(photometric=False, crop=False, hflip=False, zoom_out_p=1.0,
                                                    input_size=(HEIGHT, WIDTH)))
    image, target = transform(*make_sample())
    mask = target["mask"].numpy()
    assert (mask == 255).mean() > 0.1
    pixels = image.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(np.median(pixels[mask == 255], axis=0) - FILL).max() <= 2


@pytest.mark.parametrize("photometric", [False, True])
def test_full_training_pipeline_keeps_alignment_over_many_trials(photometric):
    cfg = AugmentationConfig(input_size=(96, 128), photometric=photometric, vflip=True, rot90=True)
    transform = build_transforms(cfg, train=True)
    changed_boxes = 0
    for seed in range(150):
        torch.manual_seed(seed)
        image, target = transform(*make_sample())
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 96, 128)
        assert_aligned(image, target, check_colors=not photometric)
        if len(target["boxes"]) != len(BOXES):
            changed_boxes += 1
    assert changed_boxes > 0  # crops really removed objects in some trials


def test_full_pipeline_is_reproducible_from_the_seed():
    transform = build_transforms(AugmentationConfig(), train=True)
    torch.manual_seed(7)
    first = transform(*make_sample())
    torch.manual_seed(7)
    second = transform(*make_sample())
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1]["boxes"], second[1]["boxes"])
    assert torch.equal(first[1]["mask"], second[1]["mask"])


def test_segmentation_only_sample_is_cropped_without_boxes():
    transform = build_transforms(AugmentationConfig(input_size=(64, 64), photometric=False), train=True)
    sizes = set()
    for seed in range(30):
        torch.manual_seed(seed)
        image, target = transform(*make_sample(with_boxes=False))
        assert set(target) == {"image_id", "mask"}
        assert tuple(image.shape) == (3, 64, 64) and tuple(target["mask"].shape) == (64, 64)
        sizes.add(int((target["mask"] == 1).sum()))
    assert len(sizes) > 5  # the crop changes what is visible


def test_detection_sample_without_objects_passes_through():
    transform = build_transforms(AugmentationConfig(input_size=(64, 64)), train=True)
    image, target = make_sample(with_boxes=False, with_mask=False)
    empty = detection_fields(np.zeros((0, 4)), np.zeros(0), (HEIGHT, WIDTH))
    target.update(empty)
    torch.manual_seed(0)
    image, target = transform(image, target)
    assert set(target) == {"image_id", "boxes", "labels"}
    assert target["boxes"].shape == (0, 4) and tuple(image.shape) == (3, 64, 64)


def test_eval_transform_only_resizes():
    transform = build_transforms(AugmentationConfig(input_size=(60, 320)), train=False)
    image, target = transform(*make_sample())
    assert tuple(image.shape) == (3, 60, 320)
    expected = torch.tensor(BOXES, dtype=torch.float32) * torch.tensor([2.0, 0.5, 2.0, 0.5])
    assert torch.allclose(target["boxes"], expected)
    assert_aligned(image, target)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="hflip_p"):
        AugmentationConfig(hflip_p=1.5)
    with pytest.raises(ValueError, match="input_size"):
        AugmentationConfig(input_size=(0, 10))


def test_disabled_ops_are_absent():
    transform = build_transforms(AugmentationConfig(photometric=False, zoom_out=False, crop=False, hflip=False,
                                                    input_size=(HEIGHT, WIDTH)))
    assert isinstance(transform, JointTransform)
    image, target = transform(*make_sample())
    reference_image, reference_target = make_sample()
    assert torch.equal(image, reference_image)
    assert torch.equal(target["mask"], reference_target["mask"])


# -- letterbox (model.resize = letterbox) -----------------------------------------------------------

FRAME_H, FRAME_W = 720, 1280  # a 16:9 camera frame


def frame_sample():
    """A 16:9 frame, grey, with one white object at x 400..720, y 180..540 (its box and mask)."""
    image = torch.full((3, FRAME_H, FRAME_W), 60, dtype=torch.uint8)
    image[:, 180:540, 400:720] = 255
    mask = torch.zeros(FRAME_H, FRAME_W, dtype=torch.uint8)
    mask[180:540, 400:720] = 1
    target = {"image_id": "frame", "mask": mask_field(mask.numpy())}
    target.update(detection_fields(np.array([[400, 180, 720, 540]]), np.array([0]), (FRAME_H, FRAME_W)))
    return tv_tensors.Image(image), target


def test_letterbox_fits_a_16_9_frame_without_distortion_by_hand_computed_geometry():
    transform = build_transforms(AugmentationConfig(input_size=(320, 320), resize="letterbox"), train=False)
    image, target = transform(*frame_sample())
    # scale 320 / 1280 = 0.25 on both axes: content 320 x 180, centred with (320 - 180) / 2 = 70 rows above.
    assert tuple(image.shape) == (3, 320, 320)
    assert target["boxes"].tolist() == [[100.0, 70 + 45.0, 180.0, 70 + 135.0]]
    mask = target["mask"].numpy()
    assert (mask[:70] == 255).all() and (mask[250:] == 255).all()  # padding is ignored by the loss
    assert (mask[115:205, 100:180] == 1).all() and mask[70:250].sum() == 90 * 80
    assert image[:, :70].reshape(3, -1).unique(dim=1).T.tolist() == [list(FILL)]
    assert image[:, 160, 140].tolist() == [255, 255, 255] and image[:, 80, 10].tolist() == [60, 60, 60]
    stretched = build_transforms(AugmentationConfig(input_size=(320, 320)), train=False)(*frame_sample())[1]
    assert stretched["boxes"].tolist() == [[100.0, 80.0, 180.0, 240.0]]  # 0.25 across, 4/9 down: distorted


def test_training_letterbox_box_round_trips_through_the_predictor_geometry_within_a_pixel():
    from mtl_perception.letterbox import boxes_to_original, resize_geometry

    transform = build_transforms(AugmentationConfig(input_size=(288, 512), resize="letterbox"), train=False)
    _, target = transform(*frame_sample())
    geometry = resize_geometry((FRAME_H, FRAME_W), (288, 512), "letterbox")
    back = boxes_to_original(target["boxes"].as_subclass(torch.Tensor), geometry)
    assert (back - torch.tensor([[400.0, 180.0, 720.0, 540.0]])).abs().max() <= 1.0
    odd = build_transforms(AugmentationConfig(input_size=(300, 300), resize="letterbox"), train=False)
    _, target = odd(*frame_sample())  # scale 300/1280: content 300 x 169 (168.75 rounded), 65 rows above
    geometry = resize_geometry((FRAME_H, FRAME_W), (300, 300), "letterbox")
    assert (geometry.content_size, geometry.pad_top) == ((169, 300), 65)
    back = boxes_to_original(target["boxes"].as_subclass(torch.Tensor), geometry)
    assert (back - torch.tensor([[400.0, 180.0, 720.0, 540.0]])).abs().max() <= 1.0


def test_letterbox_training_pipeline_keeps_alignment_and_never_stretches_box_free_samples():
    cfg = AugmentationConfig(input_size=(96, 128), resize="letterbox", photometric=False, vflip=True)
    transform = build_transforms(cfg, train=True)
    for seed in range(60):
        torch.manual_seed(seed)
        image, target = transform(*make_sample())
        assert tuple(image.shape) == (3, 96, 128)
        assert_aligned(image, target)
    no_zoom_out = build_transforms(AugmentationConfig(input_size=(96, 128), resize="letterbox", photometric=False,
                                                      zoom_out=False), train=True)
    ratios = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _, target = no_zoom_out(*make_sample(with_boxes=False))
        ys, xs = np.nonzero(target["mask"].numpy() != 255)  # the frame's content
        content_h, content_w = ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()
        # The object of label 0 (40 x 30 px in the source) keeps its 4:3 shape where fully visible.
        oy, ox = np.nonzero(target["mask"].numpy() == 1)
        if len(oy) and oy.min() > ys.min() and ox.min() > xs.min() and oy.max() < ys.max() and ox.max() < xs.max():
            ratios.add(round((ox.max() + 1 - ox.min()) / (oy.max() + 1 - oy.min()), 1))
        assert content_h == 96 or content_w == 128  # fitted on one axis, padded on the other
    assert ratios and all(abs(r - 4 / 3) < 0.25 for r in ratios), ratios


def test_resize_comes_from_the_model_config():
    from mtl_perception.training.config import ConfigError, config_from_dict

    base = {"task": "segmentation", "model": {"resize": "letterbox"},
            "data": {"train": [{"dataset": {"type": "seg_folder"}}]}, "train": {"max_steps": 1}}
    assert config_from_dict(base).augmentation_config().resize == "letterbox"
    with pytest.raises(ConfigError, match="augmentation.resize follows the model"):
        config_from_dict({**base, "augmentation": {"resize": "stretch"}})
