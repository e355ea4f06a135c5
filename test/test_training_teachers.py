"""Cross-task teachers (distill): pseudo-labels, soft terms, frozen teachers, alignment with the
augmented batch, and the class check. Expected values are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from mtl_perception.data.base import IGNORE_INDEX
from mtl_perception.data.collate import collate_batch
from mtl_perception.data.transforms import AugmentationConfig, build_transforms
from mtl_perception.losses import soft_detection_loss, soft_segmentation_loss
from mtl_perception.models.nets import SEG_LOGITS
from mtl_perception.training.config import ConfigError, DistillConfig, config_from_dict
from mtl_perception.training.teachers import Teachers, pseudo_boxes, pseudo_mask
from mtl_perception.training.trainer import Trainer
from test_training import make_tiny_data, restore_torch_threads, tiny_config_dict  # noqa: F401


def kl2(teacher: tuple[float, float], student: tuple[float, float], t: float) -> float:
    """KL(teacher || student) of two-class softmaxes at temperature t, written out."""
    def softmax(a, b):
        ea, eb = math.exp(a / t), math.exp(b / t)
        return ea / (ea + eb), eb / (ea + eb)
    p, q = softmax(*teacher), softmax(*student)
    return p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1])


def test_pseudo_mask_takes_the_argmax_where_the_teacher_is_confident_and_ignores_the_rest():
    # Three pixels, two classes: p(1) = e^2 / (1 + e^2) = 0.881; 0.5; p(0) = e^3 / (1 + e^3) = 0.953.
    logits = torch.tensor([[[[0.0, 0.0, 3.0]], [[2.0, 0.0, 0.0]]]])
    assert pseudo_mask(logits, 0.7).tolist() == [[[1, IGNORE_INDEX, 0]]]
    assert pseudo_mask(logits, 0.9).tolist() == [[[IGNORE_INDEX, IGNORE_INDEX, 0]]]  # 0.881 < 0.9
    assert pseudo_mask(logits, 0.5).tolist() == [[[1, 0, 0]]]  # a tie goes to the first class


def _detections(boxes, scores, labels=None):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels or [0] * len(scores))}


def test_pseudo_boxes_keep_confident_boxes_and_ignore_the_band_below():
    found = pseudo_boxes(_detections([[0, 0, 4, 4], [6, 6, 8, 8], [1, 1, 2, 2]], [0.9, 0.3, 0.1]), 0.5, 0.2, (10, 10))
    assert found["boxes"].tolist() == [[0, 0, 4, 4]] and found["labels"].tolist() == [0]
    expected = np.zeros((10, 10), np.uint8)
    expected[6:8, 6:8] = 1  # the 0.3 box only: 0.1 is below the ignore band
    assert np.array_equal(found["ignore_mask"].numpy(), expected) and "negative_mask" not in found
    # A fractional box is painted outwards: x 0.5..3.2 -> columns 0..3, y 0.5..3.7 -> rows 0..3.
    partial = pseudo_boxes(_detections([[0, 0, 1, 1], [0.5, 0.5, 3.2, 3.7]], [0.9, 0.25]), 0.5, 0.2, (6, 6))
    assert partial["ignore_mask"].numpy()[:5, :5].tolist() == [[1, 1, 1, 1, 0]] * 4 + [[0] * 5]


def test_no_confident_box_makes_the_tile_a_negative_except_the_uncertain_boxes():
    found = pseudo_boxes(_detections([[6, 6, 8, 8]], [0.3]), 0.5, 0.2, (10, 10))
    expected = np.ones((10, 10), np.uint8)
    expected[6:8, 6:8] = 0
    assert set(found) == {"negative_mask"} and np.array_equal(found["negative_mask"].numpy(), expected)


def test_a_confident_box_on_pixels_labelled_as_no_object_is_dropped():
    negative = torch.zeros(10, 10, dtype=torch.bool)
    negative[0:4, 0:3] = True  # 12 of the 16 pixels of the first box (75% >= 50%); none of the second
    found = pseudo_boxes(_detections([[0, 0, 4, 4], [5, 5, 9, 9]], [0.9, 0.8]), 0.5, 0.2, (10, 10), negative)
    assert found["boxes"].tolist() == [[5, 5, 9, 9]]
    alone = pseudo_boxes(_detections([[0, 0, 4, 4]], [0.9]), 0.5, 0.2, (10, 10), negative)
    assert set(alone) == {"negative_mask"} and int(alone["negative_mask"].sum()) == 100


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_soft_segmentation_term_is_the_mean_pixel_kl_times_t_squared(t):
    # 1 image, 2 classes, 1 x 2 pixels: (class 0, class 1) logits per pixel.
    student = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
    teacher = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])
    by_hand = (kl2((2.0, 0.0), (0.0, 0.0), t) + kl2((0.0, 0.0), (1.0, 0.0), t)) / 2 * t * t
    if t == 1.0:
        assert by_hand == pytest.approx((0.3278 + 0.1201) / 2, abs=1e-4)  # 0.8808 ln(0.8808/0.5) + ...
    assert float(soft_segmentation_loss(student, teacher, t)) == pytest.approx(by_hand, rel=1e-5)


def test_soft_detection_terms_are_anchor_kl_and_box_l1_on_the_confident_anchors():
    # Two anchors, background + one class. Teacher foreground: e^3 / (1 + e^3) = 0.95 (confident at
    # 0.5) and e^0 / (e^1 + e^0) = 0.27 (not).
    student_cls = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    teacher_cls = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]])
    student_box = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    teacher_box = torch.tensor([[[1.5, 2.0, 2.0, 4.0], [9.0, 9.0, 9.0, 9.0]]])
    terms = soft_detection_loss(student_cls, student_box, teacher_cls, teacher_box, 2.0, 0.5)
    kl = (kl2((0.0, 3.0), (0.0, 0.0), 2.0) + kl2((1.0, 0.0), (0.0, 1.0), 2.0)) / 2 * 4
    assert float(terms["loss_soft_cls"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["loss_soft_box"]) == pytest.approx(0.5 + 0.0 + 1.0 + 0.0)  # the first anchor only
    none = soft_detection_loss(student_cls, student_box, teacher_cls, teacher_box, 2.0, 0.99)
    assert float(none["loss_soft_box"]) == 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    sets = make_tiny_data(root / "data")
    teachers = {}
    for task in ("segmentation", "detection"):  # single-task networks as the teachers (untrained is fine)
        trainer = Trainer(config_from_dict(tiny_config_dict(sets, task=task)), root / task)
        teachers[task] = str(trainer.save_model("teacher.pt", {}))
    return sets, teachers


def test_teachers_stay_frozen_in_eval_mode_through_training_and_label_the_missing_task(tiny, tmp_path):
    sets, paths = tiny
    config = config_from_dict(tiny_config_dict(sets, train={"max_steps": 2, "eval_every_epochs": 0},
                                               distill={"teachers": paths, "soft_weight": {"segmentation": 0.5,
                                                                                           "detection": 0.5}}))
    trainer = Trainer(config, tmp_path / "run")
    networks = {task: p.model for task, p in trainer.teachers.predictors.items()}
    before = {task: {k: v.clone() for k, v in net.state_dict().items()} for task, net in networks.items()}
    summary = trainer.fit()
    for task, net in networks.items():
        after = net.state_dict()
        assert all(torch.equal(before[task][k], after[k]) for k in after), f"{task} teacher changed"
        assert not net.training and all(not m.training for m in net.modules())
        assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    # Every sample of a batch gets the missing task's labels; the loader's targets are not touched.
    assert summary["teacher_s"] > 0 and summary["student_step_s"] > 0
    images, targets = next(iter(trainer.train_loader()))
    labelled, _ = trainer.teachers.label(images, targets)
    for original, new in zip(targets, labelled):
        assert "mask" in new and ("boxes" in new or "negative_mask" in new)
        assert ("mask" in original) != ("boxes" in original)


class RedIsBuilding:
    """A stand-in segmentation teacher: 'building' wherever the image is red, confidently."""

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        red = (batch[:, 0] > 128) & (batch[:, 1] < 64)
        building = torch.where(red, 5.0, -5.0)
        return {SEG_LOGITS: torch.stack([-building, building], dim=1)}


def _left_half_red_sample(size: int = 8):
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    image[0, :, : size // 2] = 255
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[:, : size // 2] = 1
    return tv_tensors.Image(image), {"mask": tv_tensors.Mask(mask)}


@pytest.mark.parametrize("seed", range(6))
def test_pseudo_labels_line_up_with_the_augmented_image_under_flips_and_quarter_turns(seed):
    base = dict(input_size=(8, 8), photometric=False, zoom_out=False, crop=False, vflip=True, rot90=True)
    teachers = Teachers(DistillConfig(teachers={"segmentation": "stand-in"}), {}, (8, 8), torch.device("cpu"),
                        predictors={"segmentation": RedIsBuilding()})
    # The true mask goes through the same augmentation as the image (same seed): the pseudo-mask the
    # teacher gives for the augmented image must be that augmented mask, whatever flip or turn ran.
    torch.manual_seed(seed)
    image, target = build_transforms(AugmentationConfig(**base), train=True)(*_left_half_red_sample())
    images, _ = collate_batch([(image, {})])
    labelled, _ = teachers.label(images, [{}])
    assert torch.equal(labelled[0]["mask"], target["mask"].as_subclass(torch.Tensor))


def test_after_a_horizontal_flip_the_right_half_is_building():
    teachers = Teachers(DistillConfig(teachers={"segmentation": "stand-in"}), {}, (8, 8), torch.device("cpu"),
                        predictors={"segmentation": RedIsBuilding()})
    flip = AugmentationConfig(input_size=(8, 8), photometric=False, zoom_out=False, crop=False, hflip=True,
                              hflip_p=1.0, vflip=False, rot90=False)
    image, _ = build_transforms(flip, train=True)(*_left_half_red_sample())
    images, _ = collate_batch([(image, {})])
    labelled, _ = teachers.label(images, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    assert labelled[0]["mask"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] * 8


def test_a_teacher_of_other_classes_fails_at_start_naming_both_lists(tiny, tmp_path):
    sets, _ = tiny
    other = dict(sets["seg_train"], class_map={"name": "roofs", "segmentation": ["background", "roof"]})
    trainer = Trainer(config_from_dict(tiny_config_dict({**sets, "seg_train": other, "seg_val": other},
                                                        task="segmentation")), tmp_path / "roofs")
    path = trainer.save_model("roofs.pt", {})
    config = config_from_dict(tiny_config_dict(sets, distill={"teachers": {"segmentation": str(path)}}))
    with pytest.raises(ConfigError) as error:
        Trainer(config, tmp_path / "run")
    message = str(error.value)
    assert "['background', 'roof']" in message and "['background', 'blob']" in message


def test_distill_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="distill.teachers keys"):
        config_from_dict({"task": "multitask", "data": {"train": [{"dataset": {"type": "coco"}}]}, "train": {"max_steps": 1},
                          "distill": {"teachers": {"depth": "x.pt"}}})
    with pytest.raises(ConfigError, match="det_ignore_score"):
        config_from_dict({"task": "multitask", "data": {"train": [{"dataset": {"type": "coco"}}]},
                          "train": {"max_steps": 1}, "distill": {"det_ignore_score": 0.9, "det_score_threshold": 0.5}})
    with pytest.raises(ConfigError, match="must name tasks of the model"):
        config_from_dict({"task": "detection", "data": {"train": [{"dataset": {"type": "coco"}}]},
                          "train": {"max_steps": 1}, "distill": {"teachers": {"segmentation": "x.pt"}}})
