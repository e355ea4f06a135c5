"""Cross-task teachers: frozen single-task networks label the task a sample lacks.

Every training sample of the interleaved recipe is labelled for one task only. A teacher (a
single-task checkpoint of the same classes) runs frozen, in eval mode, through the one
inference path (:meth:`Predictor.forward`, the raw head outputs) on the *same augmented batch*
the student sees, so its labels line up with the student's input without any re-projection.
See :class:`~mtl_perception.training.config.DistillConfig` for the settings.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..data.base import IGNORE_INDEX
from ..letterbox import resize_geometry
from ..models.nets import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS
from ..postprocess import DetectionParams, decode_detections
from ..predictor import Predictor
from .config import ConfigError, DistillConfig

# A pseudo box lying this much on pixels the true mask marks as "no detection object here"
# (loss.det_negative_seg_classes, e.g. buildings for a tree detector) is a teacher's mistake.
NEGATIVE_AREA = 0.5
TEACHER_NMS_IOU = 0.45
TEACHER_MAX_BOXES = 200


def pseudo_mask(seg_logits: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """[N, K, H, W] teacher logits -> [N, H, W] int64 labels: the argmax where the top class
    probability is >= ``min_confidence``, else ``IGNORE_INDEX``."""
    confidence, labels = F.softmax(seg_logits.float(), dim=1).max(dim=1)
    return torch.where(confidence >= min_confidence, labels, torch.full_like(labels, IGNORE_INDEX))


def paint_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [H, W]: 1 on every pixel a box (XYXY input pixels) touches, the box rounded outwards."""
    mask = torch.zeros(size, dtype=torch.uint8, device=boxes.device)
    height, width = size
    for x1, y1, x2, y2 in boxes.tolist():
        left, top = max(0, int(x1)), max(0, int(y1))
        right, bottom = min(width, int(-(-x2 // 1))), min(height, int(-(-y2 // 1)))
        if right > left and bottom > top:
            mask[top:bottom, left:right] = 1
    return mask


def pseudo_boxes(detections: Mapping[str, torch.Tensor], score_threshold: float, ignore_score: float,
                 size: tuple[int, int], negative_pixels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Detection targets for a sample without box labels from a teacher's decoded boxes.

    Args:
        detections: ``boxes`` [N, 4] XYXY input pixels, ``scores`` [N], ``labels`` [N] (after NMS).
        score_threshold: boxes scoring at least this are ground truth.
        ignore_score: boxes scoring in [``ignore_score``, ``score_threshold``) are uncertain:
            the anchors mostly inside them are neither positives nor negatives.
        size: (H, W) of the input.
        negative_pixels: optional bool [H, W], where the sample's true labels say no object can
            be; a confident box lying at least :data:`NEGATIVE_AREA` on them is dropped.
    Returns:
        With confident boxes: ``boxes``, ``labels`` and ``ignore_mask`` (the uncertain boxes).
        Without: ``negative_mask``, 1 everywhere but the uncertain boxes (the teacher found no
        object there, so the tile's anchors are negatives).
    """
    boxes, scores, labels = detections["boxes"].float(), detections["scores"].float(), detections["labels"].long()
    confident = scores >= score_threshold
    if negative_pixels is not None and confident.any():
        for index in torch.nonzero(confident).flatten().tolist():
            painted = paint_boxes(boxes[index:index + 1], size).bool()
            area = int(painted.sum())
            if area and int((painted & negative_pixels).sum()) >= NEGATIVE_AREA * area:
                confident[index] = False
    uncertain = paint_boxes(boxes[(scores >= ignore_score) & (scores < score_threshold)], size)
    if confident.any():
        return {"boxes": boxes[confident], "labels": labels[confident], "ignore_mask": uncertain}
    return {"negative_mask": 1 - uncertain}


def load_teacher(task: str, path: str, class_names: Mapping[str, Sequence[str]], input_size: tuple[int, int],
                 device: torch.device) -> Predictor:
    """The teacher of ``task``: the checkpoint's network in a torch Predictor at the student's
    input size, in eval mode, without gradients.

    Raises:
        ConfigError: unreadable checkpoint, no ``task`` branch, or other ``task`` classes than
            the student's (the message names both lists).
    """
    try:
        predictor = Predictor(path, device=str(device), backend="torch", input_size=tuple(input_size), warmup=0)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"distill.teachers.{task}: cannot load {path}: {exc}") from exc
    if task not in predictor.tasks:
        raise ConfigError(f"distill.teachers.{task}: {path} has no {task} branch (its tasks: "
                          f"{', '.join(predictor.tasks)})")
    theirs, ours = list(predictor.class_names[task]), list(class_names[task])
    if theirs != ours:
        raise ConfigError(f"distill.teachers.{task}: the teacher's {task} classes {theirs} differ from the "
                          f"student's {ours} ({path})")
    predictor.model.eval()
    for parameter in predictor.model.parameters():
        parameter.requires_grad_(False)
    return predictor


class Teachers:
    """The run's teachers (``distill.teachers``), frozen, and what they add to a batch.

    Args:
        config: the ``distill`` section.
        class_names: the student's class names per task.
        input_size: the student's input size (the teachers run at it, on the student's batch).
        device: where the teachers run.
        negative_classes: segmentation class indices whose pixels hold no detection object
            (``loss.det_negative_seg_classes``); pseudo boxes lying on them are dropped.
        predictors: task -> teacher, instead of loading ``config.teachers`` (:func:`load_teacher`);
            anything with the Predictor's ``forward`` (and, for detection, ``anchors``,
            ``box_coder`` and ``resize``).

    Raises:
        ConfigError: a teacher without the task it is named for, or whose classes of that task
            differ from the student's (the message names both lists).
    """

    def __init__(self, config: DistillConfig, class_names: Mapping[str, Sequence[str]], input_size: tuple[int, int],
                 device: torch.device, negative_classes: Sequence[int] | None = None,
                 predictors: Mapping[str, Any] | None = None):
        self.config = config
        self.device = device
        self.negative_classes = torch.tensor(list(negative_classes), device=device) if negative_classes else None
        self.predictors: dict[str, Any] = dict(predictors) if predictors is not None else {
            task: load_teacher(task, path, class_names, input_size, device) for task, path in config.teachers.items()}
        self.seconds = 0.0  # time in teacher passes (and pseudo-labelling)

    def __bool__(self) -> bool:
        return bool(self.predictors)

    def _wants(self, option: dict, task: str, default):
        return (option or {}).get(task, default)

    @torch.no_grad()
    def label(self, images: torch.Tensor, targets: list[dict]) -> tuple[list[dict], dict[str, dict[str, Any]]]:
        """Pseudo-labels for the missing task of each sample, and the teachers' outputs for the
        soft terms of the labelled task.

        Args:
            images: the augmented uint8 [B, 3, H, W] batch the student trains on.
            targets: its per-sample targets (not modified).
        Returns:
            ``(targets, soft)``: new target dicts (the pseudo-labels added) and, per task with a
            ``soft_weight`` > 0, ``{"index", "weight", "temperature", ...teacher outputs}``.
        """
        start = time.perf_counter()
        config = self.config
        batch = images.float()
        size = (int(images.shape[-2]), int(images.shape[-1]))
        new_targets = [dict(t) for t in targets]
        soft: dict[str, dict[str, Any]] = {}
        seg = self.predictors.get("segmentation")
        if seg is not None:
            logits = seg.forward(batch)[SEG_LOGITS].float()
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            missing = [i for i, t in enumerate(targets) if "mask" not in t]
            labelled = [i for i, t in enumerate(targets) if "mask" in t]
            if missing and self._wants(config.pseudo_labels, "segmentation", True):
                for i, mask in zip(missing, pseudo_mask(logits[missing], config.seg_min_confidence)):
                    new_targets[i]["mask"] = mask
            weight = float(self._wants(config.soft_weight, "segmentation", 0.0))
            if labelled and weight > 0:
                soft["segmentation"] = {"index": labelled, "logits": logits[labelled], "weight": weight,
                                        "temperature": float(self._wants(config.temperature, "segmentation", 2.0))}
        det = self.predictors.get("detection")
        if det is not None:
            outputs = det.forward(batch)
            missing = [i for i, t in enumerate(targets) if "boxes" not in t]
            labelled = [i for i, t in enumerate(targets) if "boxes" in t]
            if missing and self._wants(config.pseudo_labels, "detection", True):
                params = DetectionParams(score_threshold=config.det_ignore_score, nms_iou=TEACHER_NMS_IOU,
                                         max_detections=TEACHER_MAX_BOXES, pre_nms_top_k=1000)
                geometry = resize_geometry(size, size, det.resize)  # the batch is at the input size
                decoded = decode_detections(outputs[CLS_LOGITS][missing], outputs[BBOX_REGRESSION][missing], det.anchors,
                                            [geometry] * len(missing), params, det.box_coder)
                for i, detections in zip(missing, decoded):
                    negative = None
                    if self.negative_classes is not None and "mask" in targets[i]:
                        negative = torch.isin(targets[i]["mask"].to(self.device), self.negative_classes)
                    new_targets[i].update(pseudo_boxes(detections, config.det_score_threshold, config.det_ignore_score,
                                                       size, negative))
                    if "ignore_mask" in targets[i] and "ignore_mask" in new_targets[i]:
                        new_targets[i]["ignore_mask"] = new_targets[i]["ignore_mask"] | targets[i]["ignore_mask"].to(
                            self.device, torch.uint8)
            weight = float(self._wants(config.soft_weight, "detection", 0.0))
            if labelled and weight > 0:
                soft["detection"] = {"index": labelled, "cls_logits": outputs[CLS_LOGITS][labelled],
                                     "bbox_regression": outputs[BBOX_REGRESSION][labelled], "weight": weight,
                                     "temperature": float(self._wants(config.temperature, "detection", 2.0)),
                                     "confident_score": config.det_score_threshold}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return new_targets, soft
