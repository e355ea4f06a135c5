"""Networks, anchors, losses, postprocess, checkpoints and the Predictor (no ROS)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_perception.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from mtl_perception.letterbox import resize_geometry
from mtl_perception.losses import MultitaskLoss, multibox_loss, segmentation_loss
from mtl_perception.models import (
    BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS, DetectionNet, ModelConfig, MultitaskNet, PretrainedWeightsError,
    SegmentationNet, build_model, feature_sizes, single_task_config,
)
from mtl_perception.models.anchors import box_coder
from mtl_perception.postprocess import DetectionParams, decode_detections, segmentation_masks
from mtl_perception.predictor import Predictor, resolve_device, resolve_precision

SMALL = dict(trunk="resnet18", input_size=(96, 128), num_seg_classes=3, num_det_classes=2,
             det_extra_channels=(64, 64, 64), seg_head_channels=32)
NAMES = {"segmentation": ["background", "road", "building"], "detection": ["person", "car"]}


def small_config(**changes):
    return ModelConfig(**{**SMALL, **changes})


@pytest.mark.parametrize("trunk", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_output_shapes_for_every_trunk(trunk):
    config = small_config(trunk=trunk, input_size=(70, 100))
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, 70, 100), dtype=torch.uint8))
    anchors = model.anchors()
    assert out[SEG_LOGITS].shape == (2, 3, 70, 100)
    num_anchors = sum(h * w * n for (h, w), n in zip(feature_sizes(config), model.anchor_generator.num_anchors_per_location()))
    assert anchors.shape == (num_anchors, 4)
    assert out[BBOX_REGRESSION].shape == (2, num_anchors, 4)
    assert out[CLS_LOGITS].shape == (2, num_anchors, 3)


def test_feature_sizes_match_the_real_feature_maps():
    config = small_config(input_size=(100, 150))
    model = build_model(config).eval()
    seen = []
    model.det_head.head.register_forward_pre_hook(lambda module, args: seen.extend(tuple(x.shape[-2:]) for x in args[0]))
    with torch.no_grad():
        model(torch.zeros(1, 3, 100, 150))
    assert seen == feature_sizes(config) == [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2), (1, 1)]


@pytest.mark.parametrize("skips, score_side", [((), 4), (("c4",), 7), (("c4", "c3"), 13)])
def test_fcn_skips_set_the_score_map_stride(skips, score_side):
    # 100 px input: stride 32 -> ceil(100/32) = 4, stride 16 -> 7, stride 8 -> 13.
    model = build_model(small_config(input_size=(100, 100), seg_skips=skips)).eval()
    assert model.score_map_size((100, 100)) == (score_side, score_side)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 100, 100), seg_output_size=model.score_map_size((100, 100)))
    assert out[SEG_LOGITS].shape == (1, 3, score_side, score_side)


def test_fcn8s_starts_as_the_fcn16s_output_and_learns_from_the_stride_8_map():
    # The skip score layers start at zero (FCN): at initialisation the extra c3 skip adds nothing
    # to the FCN-16s scores resampled through the stride-8 grid, and the gradient reaches that layer.
    torch.manual_seed(0)
    fcn16 = build_model(small_config(input_size=(64, 64), seg_skips=("c4",))).eval()
    fcn8 = build_model(small_config(input_size=(64, 64), seg_skips=("c4", "c3"))).eval()
    missing, unexpected = fcn8.load_state_dict(fcn16.state_dict(), strict=False)
    assert missing == ["seg_head.skip_score_c3.weight", "seg_head.skip_score_c3.bias"] and unexpected == []
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        via_stride_8 = F.interpolate(fcn16(images, seg_output_size=(8, 8))[SEG_LOGITS], size=(64, 64),
                                     mode="bilinear", align_corners=False)
        assert torch.allclose(fcn8(images)[SEG_LOGITS], via_stride_8, atol=1e-5)
    fcn8(images)[SEG_LOGITS][:, 1].sum().backward()
    assert fcn8.seg_head.skip_score_c3.weight.grad.abs().sum() > 0


def test_seg_skips_are_validated_and_the_old_bool_field_still_loads():
    with pytest.raises(ValueError, match="seg_skips"):
        small_config(seg_skips=("c3",))
    assert ModelConfig.from_dict({**small_config().to_dict(), "seg_skips": ["c4", "c3"]}).seg_skips == ("c4", "c3")
    legacy = {k: v for k, v in small_config().to_dict().items() if k != "seg_skips"}
    assert ModelConfig.from_dict({**legacy, "seg_skip": True}).seg_skips == ("c4",)
    assert ModelConfig.from_dict({**legacy, "seg_skip": False}).seg_skips == ()


def test_feature_pyramid_feeds_every_trunk_level_of_ssd_at_its_width():
    config = small_config(input_size=(100, 150), det_fpn_channels=24)
    model = build_model(config).eval()
    seen = []
    model.det_head.head.register_forward_pre_hook(lambda module, args: seen.extend(tuple(x.shape[1:]) for x in args[0]))
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 100, 150))
    sizes = feature_sizes(config)
    levels = len(config.det_stages)
    assert seen[:levels] == [(24, h, w) for h, w in sizes[:levels]]
    assert [c for c, _, _ in seen[levels:]] == list(config.det_extra_channels)
    assert out[CLS_LOGITS].shape[1] == model.anchors().shape[0]
    with pytest.raises(ValueError, match="det_fpn_channels"):
        small_config(det_fpn_channels=-1)


def test_single_task_twins_share_the_classes_and_differ_by_one_branch():
    config = small_config()
    multi = build_model(config)
    seg = build_model(single_task_config(config, "segmentation"))
    det = build_model(single_task_config(config, "detection"))
    assert isinstance(multi, MultitaskNet) and isinstance(seg, SegmentationNet) and isinstance(det, DetectionNet)
    assert seg.det_head is None and det.seg_head is None
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(multi) == n(seg) + n(det) - n(seg.trunk)
    with pytest.raises(ValueError, match="needs both tasks"):
        MultitaskNet(single_task_config(config, "segmentation"))


def test_anchors_against_hand_computed_boxes():
    # One level: c5 of a 64x64 input is 2x2; scales s=0.25, s'=sqrt(0.25*0.5); aspect ratio 2.
    config = small_config(input_size=(64, 64), det_stages=("c5",), det_extra_channels=(),
                          anchor_aspect_ratios=((2,),), anchor_min_ratio=0.25, anchor_max_ratio=0.5)
    anchors = build_model(config).anchors()
    assert anchors.shape == (2 * 2 * 4, 4)
    s, sp = 0.25 * 64, math.sqrt(0.25 * 0.5) * 64  # 16 px, 22.627 px
    w2, h2 = 0.25 * math.sqrt(2) * 64, 0.25 / math.sqrt(2) * 64  # 22.627 x 11.314 px
    cx, cy = 16.0, 16.0  # centre of cell (0, 0): (0 + 0.5) / 2 * 64
    expected_cell0 = torch.tensor([
        [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2],
        [cx - sp / 2, cy - sp / 2, cx + sp / 2, cy + sp / 2],
        [cx - w2 / 2, cy - h2 / 2, cx + w2 / 2, cy + h2 / 2],
        [cx - h2 / 2, cy - w2 / 2, cx + h2 / 2, cy + w2 / 2],
    ])
    torch.testing.assert_close(anchors[:4], expected_cell0, atol=1e-4, rtol=0)
    # Cell (0, 1) is the next 4 boxes, shifted right by 32 px (row-major order).
    torch.testing.assert_close(anchors[4:8], expected_cell0 + torch.tensor([32.0, 0, 32.0, 0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(anchors[8:12], expected_cell0 + torch.tensor([0, 32.0, 0, 32.0]), atol=1e-4, rtol=0)


def _outputs(config, batch=4, seed=0):
    torch.manual_seed(seed)
    model = build_model(config)
    images = torch.randint(0, 256, (batch, 3, *config.input_size)).float()
    return model, model(images)


def _det_target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}


def _seg_target(config, value=1):
    mask = torch.full(config.input_size, 255, dtype=torch.long)
    mask[10:40, 20:60] = value
    mask[50:, :] = 0
    return {"mask": mask}


@pytest.mark.parametrize("case", ["det_only", "seg_only", "mixed", "empty_boxes", "no_labels", "all_ignored"])
def test_losses_are_finite_for_every_batch_kind(case):
    config = small_config()
    model, outputs = _outputs(config)
    targets = {
        "det_only": [_det_target([[10, 10, 50, 60]], [0]), _det_target([[60, 20, 120, 90], [5, 5, 30, 30]], [1, 0]), {}, {}],
        "seg_only": [_seg_target(config), _seg_target(config, 2), {}, {}],
        "mixed": [_det_target([[10, 10, 50, 60]], [0]), _seg_target(config), {**_det_target([[1, 1, 40, 40]], [1]), **_seg_target(config)}, {}],
        "empty_boxes": [_det_target([], []), _det_target([], []), {}, {}],
        "no_labels": [{}, {}, {}, {}],
        "all_ignored": [{"mask": torch.full(config.input_size, 255)}, {}, {}, {}],
    }[case]
    parts = MultitaskLoss(config.tasks)(outputs, targets, model.anchors())
    for key in ("loss", "loss_seg", "loss_box", "loss_cls"):
        assert torch.isfinite(parts[key]), key
    if case in ("no_labels", "all_ignored", "empty_boxes"):
        assert parts["loss_seg"].item() == 0.0 and parts["loss_box"].item() == 0.0
    if case in ("det_only", "mixed"):
        assert parts["loss_box"].item() > 0 and parts["loss_cls"].item() > 0 and parts["num_positives"].item() >= 2
    if case in ("seg_only", "mixed"):
        assert parts["loss_seg"].item() > 0
    parts["loss"].backward()  # a graph exists even when every term is zero


def test_class_weighted_segmentation_loss_by_hand():
    # Two classes, three pixels with logits (2, 0): one background, one of class 1, one ignored.
    # Cross-entropy: background log(1 + e^-2), class 1 log(1 + e^2); weights (1, 3) give
    # (1 * a + 3 * b) / (1 + 3); the ignored pixel counts nowhere.
    logits = torch.tensor([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]).view(1, 2, 1, 3)
    target = {"mask": torch.tensor([[0, 1, 255]])}
    a, b = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    weighted = segmentation_loss(logits, [target], class_weights=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx((a + 3 * b) / 4, rel=1e-6)
    assert segmentation_loss(logits, [target]).item() == pytest.approx((a + b) / 2, rel=1e-6)
    loss = MultitaskLoss(("segmentation",), seg_class_weights=[1.0, 3.0])
    assert loss({SEG_LOGITS: logits}, [target])["loss_seg"].item() == pytest.approx((a + 3 * b) / 4, rel=1e-6)


def test_segmentation_loss_uses_only_labelled_samples():
    config = small_config()
    _, outputs = _outputs(config, batch=2)
    logits = outputs[SEG_LOGITS]
    target = _seg_target(config)
    alone = segmentation_loss(logits[:1], [target])
    mixed = segmentation_loss(logits, [target, {}])
    torch.testing.assert_close(alone, mixed)
    reference = torch.nn.functional.cross_entropy(logits[:1], target["mask"][None], ignore_index=255)
    torch.testing.assert_close(alone, reference)


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [80, 80, 90, 90], [0, 50, 10, 60]], dtype=torch.float32)
    cls_logits = torch.zeros(1, 6, 3)
    cls_logits[0, 1:, 2] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # negatives, increasingly wrong
    target = [_det_target([[0, 0, 10, 10]], [0])]  # matches anchor 0 only
    parts = multibox_loss(cls_logits, torch.zeros(1, 6, 4), anchors, target)
    ce = torch.nn.functional.cross_entropy(cls_logits[0], torch.tensor([1, 0, 0, 0, 0, 0]), reduction="none")
    # 1 positive -> the 3 hardest negatives are anchors 5, 4, 3.
    expected = ce[0] + ce[5] + ce[4] + ce[3]
    torch.testing.assert_close(parts["loss_cls"], expected)
    assert parts["num_positives"].item() == 1
    offsets = box_coder().encode_single(torch.tensor([[0.0, 0, 10, 10]]), anchors[:1])
    torch.testing.assert_close(offsets, torch.zeros(1, 4))
    assert parts["loss_box"].item() == 0.0


def test_ignore_band_takes_near_misses_out_of_the_hard_negatives():
    # Ground truth x 0..10 (y 0..10). Anchor 1 (x 3..13) has IoU 70/130 = 0.538: a positive.
    # Anchor 2 (x 4..14): 60/140 = 0.429; anchor 3 (x 6..16): 40/160 = 0.25; anchors 4 and 5 far.
    anchors = torch.tensor([[0, 0, 10, 10], [3, 0, 13, 10], [4, 0, 14, 10], [6, 0, 16, 10],
                            [60, 60, 70, 70], [80, 80, 90, 90]], dtype=torch.float32)
    cls_logits = torch.zeros(1, 6, 2)
    cls_logits[0, 2:, 1] = torch.tensor([9.0, 1.0, 2.0, 3.0])  # anchor 2: the hardest negative
    target = [_det_target([[0, 0, 10, 10]], [0])]
    ce = torch.nn.functional.cross_entropy(cls_logits[0], torch.tensor([1, 1, 0, 0, 0, 0]), reduction="none")
    plain = multibox_loss(cls_logits, torch.zeros(1, 6, 4), anchors, target)
    # 2 positives -> 6 hard negatives wanted, the 4 there are: 2, 3, 4, 5.
    torch.testing.assert_close(plain["loss_cls"], (ce[0] + ce[1] + ce[2] + ce[3] + ce[4] + ce[5]) / 2)
    band = multibox_loss(cls_logits, torch.zeros(1, 6, 4), anchors, target, negative_iou=0.4)
    torch.testing.assert_close(band["loss_cls"], (ce[0] + ce[1] + ce[3] + ce[4] + ce[5]) / 2)  # anchor 2 left out
    wide = multibox_loss(cls_logits, torch.zeros(1, 6, 4), anchors, target, negative_iou=0.2)
    torch.testing.assert_close(wide["loss_cls"], (ce[0] + ce[1] + ce[4] + ce[5]) / 2)  # anchors 2 and 3 left out
    assert band["num_positives"].item() == plain["num_positives"].item() == 2
    with pytest.raises(ValueError, match="negative_iou"):
        multibox_loss(cls_logits, torch.zeros(1, 6, 4), anchors, target, negative_iou=0.5)


def test_segmentation_only_samples_lend_negatives_from_their_negative_mask():
    # Image size 100 x 100. Anchor 0 matches the box of sample A; anchors 1-5 lie elsewhere.
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70],
                            [80, 80, 90, 90], [60, 0, 70, 10]], dtype=torch.float32)
    cls_logits = torch.zeros(2, 6, 2)
    cls_logits[0, 1:, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    cls_logits[1, :, 1] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    # Sample B (no boxes): its negative region covers anchors 3 and 4 wholly, anchor 2 by 40%.
    negative = torch.zeros(100, 100, dtype=torch.uint8)
    negative[60:90, 60:90] = 1
    negative[40:50, 46:50] = 1
    targets = [_det_target([[0, 0, 10, 10]], [0]), {"negative_mask": negative}]
    parts = multibox_loss(cls_logits, torch.zeros(2, 6, 4), anchors, targets)
    ce_a = torch.nn.functional.cross_entropy(cls_logits[0], torch.tensor([1, 0, 0, 0, 0, 0]), reduction="none")
    ce_b = torch.nn.functional.cross_entropy(cls_logits[1], torch.zeros(6, dtype=torch.long), reduction="none")
    # A: its positive and its 3 hardest negatives (5, 4, 3). B mines like an image with the
    # batch's mean of 1 positive, 3 negatives, but only anchors 3 and 4 are candidates
    # (anchor 0, its hardest, lies outside the region). One positive in all.
    expected = ce_a[0] + ce_a[5] + ce_a[4] + ce_a[3] + ce_b[3] + ce_b[4]
    torch.testing.assert_close(parts["loss_cls"], expected)
    assert parts["num_positives"].item() == 1
    # Through MultitaskLoss: the negative mask comes from the named segmentation classes of a
    # segmentation-only sample (class 2 here); a sample with boxes keeps its own labels.
    mask = torch.zeros(100, 100, dtype=torch.long)
    mask[60:90, 60:90] = 2
    mask[40:50, 46:50] = 2
    mask[0:10, 0:10] = 1
    outputs = {CLS_LOGITS: cls_logits, BBOX_REGRESSION: torch.zeros(2, 6, 4), SEG_LOGITS: torch.zeros(2, 3, 100, 100)}
    seg_only = [_det_target([[0, 0, 10, 10]], [0]), {"mask": mask}]
    with_negatives = MultitaskLoss(("segmentation", "detection"), det_negative_seg_classes=[2])(outputs, seg_only, anchors)
    torch.testing.assert_close(with_negatives["loss_cls"], expected)
    without = MultitaskLoss(("segmentation", "detection"))(outputs, seg_only, anchors)
    torch.testing.assert_close(without["loss_cls"], ce_a[0] + ce_a[5] + ce_a[4] + ce_a[3])


def test_box_coding_targets_decode_back_with_non_zero_offsets():
    # Anchor centre (5, 5), size 10x10; box (2, 4, 14, 12): centre (8, 8), size 12x8.
    # SSD offsets with weights (10, 10, 5, 5): 10 * 3 / 10, 10 * 3 / 10, 5 ln(12 / 10), 5 ln(8 / 10).
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    box = torch.tensor([[2.0, 4.0, 14.0, 12.0]])
    coder = build_model(small_config()).box_coder
    offsets = coder.encode_single(box, anchor)
    torch.testing.assert_close(offsets, torch.tensor([[3.0, 3.0, 5 * math.log(1.2), 5 * math.log(0.8)]]))
    torch.testing.assert_close(coder.decode_single(offsets, anchor), box)
    # Decoding hand-made offsets: dx = 1 moves the centre by w / 10; dw = 5 ln 2 doubles the width.
    decoded = coder.decode_single(torch.tensor([[1.0, -2.0, 5 * math.log(2.0), 0.0]]), anchor)
    torch.testing.assert_close(decoded, torch.tensor([[-4.0, -2.0, 16.0, 8.0]]))


def test_gradients_reach_the_trunk_from_both_branches():
    config = small_config()
    for task_key, target in (("loss_seg", [_seg_target(config)]), ("loss_cls", [_det_target([[10, 10, 60, 70]], [1])])):
        model, outputs = _outputs(config, batch=1)
        parts = MultitaskLoss(config.tasks)(outputs, target, model.anchors())
        parts[task_key].backward()
        trunk_grad = model.trunk.stage3[0].weight.grad
        assert trunk_grad is not None and trunk_grad.abs().sum() > 0, task_key
        other = model.det_head if task_key == "loss_seg" else model.seg_head
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in other.parameters()), task_key


def test_learned_uncertainty_weights_are_trained_only_for_present_tasks():
    config = small_config()
    model, outputs = _outputs(config, batch=2)
    loss = MultitaskLoss(config.tasks, learned_weights=True)
    parts = loss(outputs, [_seg_target(config), {}], model.anchors())
    parts["loss"].backward()
    assert loss.log_vars["segmentation"].grad.abs().item() > 0
    assert loss.log_vars["detection"].grad.abs().item() == 0
    assert loss.task_weights() == {"segmentation": 1.0, "detection": 1.0}


def _logits_for(anchor_scores, num_anchors, num_classes):
    logits = torch.full((1, num_anchors, num_classes + 1), -10.0)
    logits[0, :, 0] = 10.0  # background everywhere
    for anchor, cls, logit in anchor_scores:
        logits[0, anchor, 0] = 0.0
        logits[0, anchor, cls + 1] = logit
    return logits


def test_postprocess_nms_is_class_wise_and_maps_to_original_pixels():
    anchors = torch.tensor([[10, 10, 50, 30], [12, 10, 52, 30], [10, 10, 50, 30], [80, 40, 120, 60]], dtype=torch.float32)
    # anchors 0/1 overlap (IoU 0.9) with the same class; anchor 2 is the same box, other class.
    logits = _logits_for([(0, 0, 5.0), (1, 0, 4.0), (2, 1, 3.0), (3, 0, 2.0)], 4, 2)
    params = DetectionParams(score_threshold=0.5, nms_iou=0.5, max_detections=10)
    # Non-square input 64x128 (HxW); original image 480x640.
    [det] = decode_detections(logits, torch.zeros(1, 4, 4), anchors, [resize_geometry((480, 640), (64, 128))], params)
    scale = torch.tensor([640 / 128, 480 / 64, 640 / 128, 480 / 64])
    torch.testing.assert_close(det["boxes"], anchors[[0, 2, 3]] * scale)
    assert det["labels"].tolist() == [0, 1, 0]
    assert det["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)
    # max_detections and the allow-list.
    [top1] = decode_detections(logits, torch.zeros(1, 4, 4), anchors, [resize_geometry((480, 640), (64, 128))],
                               DetectionParams(score_threshold=0.5, max_detections=1))
    assert len(top1["boxes"]) == 1
    [only_cls1] = decode_detections(logits, torch.zeros(1, 4, 4), anchors, [resize_geometry((480, 640), (64, 128))],
                                    DetectionParams(score_threshold=0.5, class_allowlist=(1,)))
    assert only_cls1["labels"].tolist() == [1]


def test_postprocess_clips_boxes_to_the_image():
    anchors = torch.tensor([[-20, -10, 40, 30], [100, 50, 160, 80]], dtype=torch.float32)
    logits = _logits_for([(0, 0, 5.0), (1, 0, 5.0)], 2, 1)
    [det] = decode_detections(logits, torch.zeros(1, 2, 4), anchors, [resize_geometry((300, 200), (64, 128))],
                              DetectionParams())
    boxes = det["boxes"]
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 200).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 300).all()
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 40 * 200 / 128, 30 * 300 / 64]))


def test_segmentation_mask_is_argmax_at_original_size():
    logits = torch.zeros(1, 3, 4, 8)
    logits[0, 2, :, 4:] = 5.0  # right half is class 2
    logits[0, 1, :2, :4] = 5.0  # top-left quarter is class 1
    [mask] = segmentation_masks(logits, [(40, 60)])
    assert mask.shape == (40, 60) and mask.dtype == torch.uint8
    assert (mask[:, 35:] == 2).all() and (mask[:15, :25] == 1).all() and (mask[25:, :25] == 0).all()


def test_detection_params_are_validated():
    with pytest.raises(ValueError, match="score_threshold"):
        DetectionParams(score_threshold=1.5)
    with pytest.raises(ValueError, match="nms_iou"):
        DetectionParams(nms_iou=0.0)
    with pytest.raises(ValueError, match="max_detections"):
        DetectionParams(max_detections=0)
    with pytest.raises(ValueError, match="outside"):
        DetectionParams(class_allowlist=(5,)).validate(2)


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    path = tmp_path_factory.mktemp("ckpt") / "multitask.pt"
    save_checkpoint(make_checkpoint(model, NAMES, {"name": "tiny-multitask"}), path)
    return path, model


def test_checkpoint_round_trip_rebuilds_the_same_network(saved_checkpoint):
    path, model = saved_checkpoint
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.class_names == NAMES and loaded.model_name == "tiny-multitask"
    rebuilt = loaded.build_model()
    x = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_checkpoint_in_float16_halves_the_file(saved_checkpoint, tmp_path):
    path, model = saved_checkpoint
    half = save_checkpoint(load_checkpoint(path), tmp_path / "half.pt", torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    assert load_checkpoint(half).build_model().trunk.stage3[0].weight.dtype == torch.float32


def test_checkpoint_written_before_the_resize_field_loads_as_stretch(saved_checkpoint, tmp_path):
    good, _ = saved_checkpoint
    payload = _payload(good)
    old_config = {k: v for k, v in payload["model_config"].items() if k != "resize"}
    torch.save({**payload, "model_config": old_config}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").config.resize == "stretch"
    torch.save({**payload, "model_config": {**old_config, "resize": "letterbox"}}, tmp_path / "letterbox.pt")
    assert load_checkpoint(tmp_path / "letterbox.pt").config.resize == "letterbox"


def _payload(path):
    return torch.load(path, weights_only=True)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("case,message", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("truncated", "truncated or corrupt"),
    ("garbage", "cannot read checkpoint"),
    ("pickled_code", "refused"),
    ("not_ours", "not an mtl_perception checkpoint"),
    ("wrong_version", "format version 99"),
    ("wrong_architecture", "do not fit the multitask resnet34"),
    ("bad_config", "invalid architecture config"),
    ("class_names", "needs 2 class names"),
])
def test_every_corrupt_checkpoint_gives_a_clear_error(saved_checkpoint, tmp_path, case, message):
    good, _ = saved_checkpoint
    bad = tmp_path / f"{case}.pt"
    payload = _payload(good)
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "pickled_code":
        torch.save({"format": "mtl_perception.checkpoint", "evil": _Evil()}, bad)
    elif case == "not_ours":
        torch.save({"model": payload["state_dict"]}, bad)
    elif case == "wrong_version":
        torch.save({**payload, "format_version": 99}, bad)
    elif case == "wrong_architecture":
        torch.save({**payload, "model_config": {**payload["model_config"], "trunk": "resnet34"}}, bad)
    elif case == "bad_config":
        torch.save({**payload, "model_config": {**payload["model_config"], "trunk": "vgg16"}}, bad)
    elif case == "class_names":
        torch.save({**payload, "class_names": {**payload["class_names"], "detection": ["person"]}}, bad)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_predictor_output_contract(saved_checkpoint):
    """Types, shapes and the max_detections cap; the values are checked by known answers in test_predictor."""
    path, _ = saved_checkpoint
    predictor = Predictor(path, device="cpu", detection=DetectionParams(score_threshold=0.0, max_detections=50))
    image = np.random.default_rng(1).integers(0, 256, (241, 397, 3), dtype=np.uint8)
    result = predictor(image)
    assert result.mask.shape == (241, 397) and result.mask.dtype == np.uint8
    assert result.boxes.shape == (50, 4) and result.boxes.dtype == np.float32  # threshold 0: the cap binds
    assert result.scores.shape == (50,) and result.labels.dtype == np.int64
    assert list(result.scores) == sorted(result.scores, reverse=True)
    t = result.timings
    assert t.total_ms >= t.preprocess_ms + t.inference_ms + t.postprocess_ms - 1e-6


def test_predictor_runtime_params_and_bad_images(saved_checkpoint):
    path, _ = saved_checkpoint
    predictor = Predictor(path, device="cpu", warmup=0)
    image = np.zeros((50, 60, 3), np.uint8)
    predictor.set_detection_params(DetectionParams(score_threshold=0.0, max_detections=3))
    assert len(predictor(image).boxes) == 3
    assert predictor.class_indices(["car"]) == (1,)
    with pytest.raises(ValueError, match="unknown detection class"):
        predictor.class_indices(["boat"])
    with pytest.raises(ValueError, match="outside"):
        predictor.set_detection_params(DetectionParams(class_allowlist=(7,)))
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8)):
        with pytest.raises(ValueError):
            predictor(bad)


def test_device_and_precision_policy():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


def test_pretrained_trunk_from_the_offline_package_and_clear_error_otherwise(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model(small_config(trunk="mobilenet_v2"), trunk_weights="imagenet")
    reference = torchvision.models.mobilenet_v2()
    from mtl_perception.models import find_imagenet_weights

    reference.load_state_dict(torch.load(find_imagenet_weights("mobilenet_v2"), weights_only=True))
    torch.testing.assert_close(model.trunk.stage5._modules["17"].conv[2].weight, reference.features[17].conv[2].weight)
    with pytest.raises(PretrainedWeightsError, match="Nothing is downloaded"):
        build_model(small_config(trunk="resnet50"), trunk_weights="imagenet")
    with pytest.raises(PretrainedWeightsError, match="not found"):
        build_model(small_config(), trunk_weights=str(tmp_path / "nope.pth"))


def test_short_training_loop_drives_the_loss_down():
    torch.manual_seed(0)
    config = small_config(input_size=(64, 64), det_extra_channels=(32, 32, 32))
    model = build_model(config).train()
    criterion = MultitaskLoss(config.tasks)
    images = torch.randint(0, 256, (4, 3, 64, 64)).float()
    targets = []
    for i in range(4):
        x0 = 8 * i
        mask = torch.zeros(64, 64, dtype=torch.long)
        mask[x0:x0 + 24, 10:40] = 1 + i % 2
        images[i, :, x0:x0 + 24, 10:40] = 255.0 * (i % 2)
        targets.append({"boxes": torch.tensor([[10.0, x0, 40.0, x0 + 24]]), "labels": torch.tensor([i % 2]), "mask": mask})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        parts = criterion(model(images), targets, model.anchors())
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision,cuda_graph", [("fp16", False), ("bf16", False), ("fp16", True)])
def test_cuda_predictor_matches_cpu(saved_checkpoint, precision, cuda_graph):
    path, _ = saved_checkpoint
    image = np.random.default_rng(2).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    cpu = Predictor(path, device="cpu", warmup=0)(image)
    gpu_predictor = Predictor(path, device="cuda", precision=precision, cuda_graph=cuda_graph)
    gpu = gpu_predictor(image)
    assert gpu.mask.shape == cpu.mask.shape and (gpu.mask == cpu.mask).mean() > 0.97
    assert gpu_predictor.gpu_memory_mb()[0] > 0


def test_onnx_export_matches_pytorch_through_onnxruntime(saved_checkpoint, tmp_path):
    from mtl_perception.export import check_onnx_parity, export_onnx, export_torchscript

    path, model = saved_checkpoint
    onnx_file = export_onnx(path, tmp_path / "model.onnx")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert "detection" in meta["mtl_perception.class_names"]
    image = np.random.default_rng(3).integers(0, 256, (150, 210, 3), dtype=np.uint8)
    diffs = check_onnx_parity(path, onnx_file, image)
    assert diffs["seg_logits"] < 1e-3 and diffs["cls_logits"] < 1e-3 and diffs["bbox_regression"] < 1e-3, diffs
    assert diffs["boxes"] < 1e-2 and diffs["mask_disagreement"] < 1e-3, diffs
    scripted = torch.jit.load(str(export_torchscript(path, tmp_path / "model.ts")))
    x = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        seg, reg, cls = scripted(x)
        ref = model(x)
    torch.testing.assert_close(seg, ref[SEG_LOGITS])
    torch.testing.assert_close(cls, ref[CLS_LOGITS])
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"


def test_export_cli_exit_codes_follow_the_project_scheme(saved_checkpoint, tmp_path, capsys):
    from mtl_perception.export import main

    path, _ = saved_checkpoint
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for checkpoint in (tmp_path / "missing.pt", garbage):
        out = tmp_path / "out.onnx"
        assert main([str(checkpoint), "--format", "onnx", "--out", str(out)]) == 2
        assert "mtl-export: error:" in capsys.readouterr().err and not out.exists()
    assert main([str(path), "--format", "torchscript", "--out", str(tmp_path / "model.ts")]) == 0
    assert (tmp_path / "model.ts").stat().st_size > 0
