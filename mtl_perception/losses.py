"""Training losses: SSD multibox, segmentation cross-entropy, and their multitask sum.

Every loss takes the per-sample target dicts of :func:`mtl_perception.data.collate_batch`:
a sample is labelled for detection iff its dict has ``boxes`` (boxes in input pixels,
``labels`` 0-based without background), and for segmentation iff it has ``mask``
(255 = ignore). Each task's loss uses only the samples labelled for it, and a task
with no labelled sample in the batch contributes an exact zero (never NaN).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou, generalized_box_iou_loss

from .data.base import IGNORE_INDEX
from .ignored_regions import IGNORE_REGION_OVERLAP, in_ignored_regions
from .models.anchors import box_coder
from .models.nets import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS


def segmentation_loss(seg_logits: torch.Tensor, targets: list[dict], ignore_index: int = IGNORE_INDEX,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel cross-entropy over the samples that carry a ``mask``.

    Args:
        seg_logits: [B, K, H, W] logits at input resolution.
        targets: B dicts; ``mask`` is [H, W] int with ``ignore_index`` for unlabelled pixels.
        class_weights: [K] weight of each class's pixels (None: all 1), e.g. to lift a rare
            class's recall.
    Returns:
        Weighted mean over labelled pixels (sum of weighted losses over sum of the pixels'
        weights, as ``F.cross_entropy``'s mean); 0 when there are none.
    """
    index = [i for i, t in enumerate(targets) if "mask" in t]
    if not index:
        return seg_logits.sum() * 0.0
    logits = seg_logits[index]
    masks = torch.stack([targets[i]["mask"].to(device=logits.device, dtype=torch.long) for i in index])
    if masks.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"mask size {tuple(masks.shape[-2:])} does not match logits {tuple(logits.shape[-2:])}")
    labelled = masks != ignore_index
    if class_weights is None:
        total = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum")
        return total / labelled.sum().clamp(min=1)
    weights = class_weights.to(device=logits.device, dtype=torch.float32)
    total = F.cross_entropy(logits.float(), masks, weight=weights, ignore_index=ignore_index, reduction="sum")
    return total / weights[masks[labelled]].sum().clamp(min=1e-12)


def ignored_anchors(anchors: torch.Tensor, ignore_mask: torch.Tensor, min_overlap: float = IGNORE_REGION_OVERLAP) -> torch.Tensor:
    """Anchors lying mostly inside ignored regions (the rule of :mod:`mtl_perception.ignored_regions`).

    Args:
        anchors: [A, 4] XYXY input pixels.
        ignore_mask: [H, W] at input resolution, 1 inside ignored regions (other values: not).
    Returns:
        bool [A]: at least ``min_overlap`` of the anchor's area is covered (area outside the
        input counts as not ignored).
    """
    return in_ignored_regions(anchors, ignore_mask, min_overlap).to(anchors.device)


def multibox_loss(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    anchors: torch.Tensor,
    targets: list[dict],
    iou_threshold: float = 0.5,
    neg_pos_ratio: int = 3,
    box_loss: str = "smooth_l1",
    negative_iou: float | None = None,
) -> dict[str, torch.Tensor]:
    """SSD multibox loss (Liu et al. 2016) over the samples that carry ``boxes``.

    Anchors are matched to ground truth with torchvision's ``SSDMatcher`` (IoU >= 0.5,
    plus each box's best anchor). Localisation: smooth-L1 on box-coder offsets, or GIoU
    on decoded boxes, for matched anchors. Classification: cross-entropy on positives
    plus the hardest negatives, ``neg_pos_ratio`` negatives per positive. A sample's optional
    ``ignore_mask`` ([H, W] at input size, 1 in ignored regions) takes the unmatched anchors
    of :func:`ignored_anchors` out of the negatives.

    A sample without ``boxes`` but with a ``negative_mask`` ([H, W] at input size, 1 where
    no object of any detection class can be, e.g. the building pixels of a segmentation-only
    tile for a tree detector) adds negatives only: the anchors of :func:`ignored_anchors` for
    that mask, hard-mined like an image holding the batch's mean number of positives.

    ``negative_iou`` (below ``iou_threshold``) adds RetinaNet's ignore band (Lin et al. 2017):
    an unmatched anchor whose best IoU with a box is at least ``negative_iou`` is neither
    positive nor negative. Densely packed small objects (tree crowns) otherwise turn the
    anchors beside every object into the hardest negatives, and no score separates them.

    Args:
        cls_logits: [B, A, C + 1]; bbox_regression: [B, A, 4]; anchors: [A, 4] XYXY.
    Returns:
        ``loss_box`` and ``loss_cls``, each summed and divided by the number of positives
        (at least 1), and ``num_positives``.
    """
    if box_loss not in ("smooth_l1", "giou"):
        raise ValueError(f"box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
    if negative_iou is not None and not 0 < negative_iou < iou_threshold:
        raise ValueError(f"negative_iou must be in (0, {iou_threshold}), got {negative_iou}")
    index = [i for i, t in enumerate(targets) if "boxes" in t or "negative_mask" in t]
    zero = cls_logits.sum() * 0.0 + bbox_regression.sum() * 0.0
    if not index:
        return {"loss_box": zero, "loss_cls": zero, "num_positives": torch.zeros((), device=cls_logits.device)}
    matcher = det_utils.SSDMatcher(iou_threshold)
    coder = box_coder()
    anchors = anchors.to(cls_logits.device)
    cls_logits = cls_logits[index].float()
    bbox_regression = bbox_regression[index].float()
    num_anchors = anchors.shape[0]

    class_targets, box_losses, positives, ignored = [], [], [], []
    # A Python list for the loop (a tensor element there would sync with the GPU once per sample).
    without_boxes = ["boxes" not in targets[i] for i in index]
    negatives_only = torch.tensor(without_boxes, device=anchors.device)
    for row, i in enumerate(index):
        if without_boxes[row]:
            # No box labels: only anchors lying mostly inside the negative regions are negatives.
            inside = ignored_anchors(anchors, targets[i]["negative_mask"].to(anchors.device))
            ignored.append(~inside)
            class_targets.append(torch.zeros(num_anchors, dtype=torch.long, device=anchors.device))
            positives.append(torch.zeros(num_anchors, dtype=torch.bool, device=anchors.device))
            continue
        region = targets[i].get("ignore_mask")
        ignored.append(ignored_anchors(anchors, region.to(anchors.device)) if region is not None
                       else torch.zeros(num_anchors, dtype=torch.bool, device=anchors.device))
        boxes = targets[i]["boxes"].to(device=anchors.device, dtype=torch.float32).reshape(-1, 4)
        labels = targets[i]["labels"].to(device=anchors.device, dtype=torch.long).reshape(-1)
        if boxes.shape[0] != labels.shape[0]:
            raise ValueError(f"sample {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        if boxes.numel() == 0:
            class_targets.append(torch.zeros(num_anchors, dtype=torch.long, device=anchors.device))
            positives.append(torch.zeros(num_anchors, dtype=torch.bool, device=anchors.device))
            continue
        ious = box_iou(boxes, anchors)
        matches = matcher(ious)
        fg = matches >= 0
        if negative_iou is not None:
            ignored[-1] = ignored[-1] | (~fg & (ious.max(dim=0).values >= negative_iou))
        matched = matches.clamp(min=0)
        cls_target = torch.where(fg, labels[matched] + 1, torch.zeros_like(matched))
        class_targets.append(cls_target)
        positives.append(fg)
        if fg.any():
            if box_loss == "smooth_l1":
                target_offsets = coder.encode_single(boxes[matched[fg]], anchors[fg])
                box_losses.append(F.smooth_l1_loss(bbox_regression[row][fg], target_offsets, reduction="sum"))
            else:
                decoded = coder.decode_single(bbox_regression[row][fg], anchors[fg])
                box_losses.append(generalized_box_iou_loss(decoded, boxes[matched[fg]], reduction="sum"))

    class_targets_t = torch.stack(class_targets)
    positives_t = torch.stack(positives)
    num_pos_per_image = positives_t.sum(dim=1, keepdim=True)
    # A negatives-only sample mines as many negatives as a sample with the batch's mean
    # number of positives (at least one).
    boxed = ~negatives_only
    mean_positives = num_pos_per_image[boxed].float().mean().clamp(min=1) if boxed.any() else torch.ones(())
    quota = torch.where(negatives_only[:, None], mean_positives.round().long(), num_pos_per_image)
    per_anchor = F.cross_entropy(cls_logits.reshape(-1, cls_logits.shape[-1]), class_targets_t.reshape(-1),
                                 reduction="none").view_as(class_targets_t)
    # Hard negative mining: rank the negatives of each image by loss, keep the top 3 per positive.
    negative_loss = per_anchor.detach().clone()
    not_negative = positives_t | torch.stack(ignored)
    negative_loss[not_negative] = -math.inf
    _, order = negative_loss.sort(dim=1, descending=True)
    _, rank = order.sort(dim=1)
    hard_negatives = (rank < neg_pos_ratio * quota) & ~not_negative
    num_pos = positives_t.sum()
    normaliser = num_pos.clamp(min=1).float()
    loss_box = torch.stack(box_losses).sum() / normaliser if box_losses else zero
    loss_cls = (per_anchor[positives_t].sum() + per_anchor[hard_negatives].sum()) / normaliser
    return {"loss_box": loss_box, "loss_cls": loss_cls, "num_positives": num_pos.float()}


class MultitaskLoss(nn.Module):
    """Weighted sum of the task losses, fixed or learned.

    With ``learned_weights`` the weights come from homoscedastic uncertainty (Kendall,
    Gal and Cipolla 2018): ``sum_i exp(-s_i) * L_i + s_i`` with one learned ``s_i =
    log(sigma_i^2)`` per task. A task absent from the batch adds nothing, not even its
    ``s_i`` term, so interleaved batches don't drift the weights.

    Args:
        tasks: the model's tasks.
        weights: fixed weight per task (``segmentation``, ``detection``), default 1.
        learned_weights: learn the weights instead.
        box_loss: ``smooth_l1`` or ``giou``.
        seg_class_weights: per-class weights of the pixel cross-entropy (None: all 1).
        negative_iou: the multibox ignore band's lower edge (see :func:`multibox_loss`).
        det_negative_seg_classes: segmentation class indices whose pixels hold no object of
            any detection class (e.g. ``building`` for a tree detector). In a segmentation-only
            sample, anchors lying mostly on them become detection negatives: the detection
            branch learns from the other task's labels what its objects are not.
    """

    def __init__(self, tasks: tuple[str, ...], weights: dict[str, float] | None = None,
                 learned_weights: bool = False, box_loss: str = "smooth_l1", neg_pos_ratio: int = 3,
                 seg_class_weights: list[float] | None = None, negative_iou: float | None = None,
                 det_negative_seg_classes: list[int] | None = None):
        super().__init__()
        self.negative_iou = negative_iou
        self.register_buffer("det_negative_seg_classes", torch.tensor(det_negative_seg_classes, dtype=torch.long)
                             if det_negative_seg_classes else None, persistent=False)
        self.register_buffer("seg_class_weights", torch.tensor(seg_class_weights, dtype=torch.float32)
                             if seg_class_weights is not None else None, persistent=False)
        self.tasks = tuple(tasks)
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}
        self.box_loss = box_loss
        self.neg_pos_ratio = neg_pos_ratio
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in self.tasks}) if learned_weights else None

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict], anchors: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Returns ``loss`` (to backpropagate) and the parts: ``loss_seg``, ``loss_box``, ``loss_cls``."""
        parts: dict[str, torch.Tensor] = {}
        task_losses: dict[str, torch.Tensor] = {}
        present: dict[str, bool] = {}
        if "segmentation" in self.tasks:
            parts["loss_seg"] = segmentation_loss(outputs[SEG_LOGITS], targets, class_weights=self.seg_class_weights)
            task_losses["segmentation"] = parts["loss_seg"]
            present["segmentation"] = any("mask" in t for t in targets)
        if "detection" in self.tasks:
            if anchors is None:
                raise ValueError("anchors are required for the detection loss")
            det = multibox_loss(outputs[CLS_LOGITS], outputs[BBOX_REGRESSION], anchors, self._detection_targets(targets),
                                neg_pos_ratio=self.neg_pos_ratio, box_loss=self.box_loss,
                                negative_iou=self.negative_iou)
            parts.update(det)
            task_losses["detection"] = det["loss_box"] + det["loss_cls"]
            present["detection"] = any("boxes" in t for t in targets)
        total = None
        for task, value in task_losses.items():
            if self.log_vars is not None:
                s = self.log_vars[task]
                term = torch.exp(-s) * value + s if present[task] else value * 0.0 + s * 0.0
            else:
                term = self.weights[task] * value
            total = term if total is None else total + term
        parts["loss"] = total
        return parts

    def _detection_targets(self, targets: list[dict]) -> list[dict]:
        """``targets`` with a ``negative_mask`` added to each segmentation-only sample (see
        ``det_negative_seg_classes``)."""
        classes = self.det_negative_seg_classes
        if classes is None:
            return targets
        out = []
        for t in targets:
            if "mask" in t and "boxes" not in t:
                negative = torch.isin(t["mask"], classes.to(t["mask"].device)).to(torch.uint8)
                if "negative_mask" in t:  # e.g. a teacher's "no object here": both are negatives
                    negative = negative | t["negative_mask"].to(negative.device, torch.uint8)
                t = {**t, "negative_mask": negative}
            out.append(t)
        return out

    def task_weights(self) -> dict[str, float]:
        """Current effective weight of each task (for logging)."""
        if self.log_vars is None:
            return dict(self.weights)
        return {t: float(torch.exp(-v.detach())) for t, v in self.log_vars.items()}


def softened_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                dim: int) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes over ``dim`` at ``temperature``, per element."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=dim)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=dim)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=dim)


def soft_segmentation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distillation of pixel class distributions (Hinton et al. 2015): the mean over pixels of
    KL(teacher || student), both softmaxes at ``temperature``, times ``temperature**2`` (so the
    gradient scale does not depend on it).

    Args:
        student_logits, teacher_logits: [N, K, H, W] (the same size).
    Returns:
        A scalar; 0 for an empty batch.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = float(temperature)
    return softened_kl(student_logits, teacher_logits, t, dim=1).mean() * t * t  # mean over [N, H, W]


def soft_detection_loss(student_cls: torch.Tensor, student_box: torch.Tensor, teacher_cls: torch.Tensor,
                        teacher_box: torch.Tensor, temperature: float, confident_score: float) -> dict[str, torch.Tensor]:
    """Distillation of the SSD outputs on the same anchors.

    * ``loss_soft_cls``: the mean over anchors of KL(teacher || student) of the anchor class
      distributions (background included) at ``temperature``, times ``temperature**2``;
    * ``loss_soft_box``: L1 between the box offsets (summed over the 4 coordinates, mean over
      anchors) on the teacher's confident anchors: its best foreground probability (temperature
      1) >= ``confident_score``; 0 where it has none.

    Args:
        student_cls, teacher_cls: [N, A, C + 1]; student_box, teacher_box: [N, A, 4].
    """
    if student_cls.shape != teacher_cls.shape or student_box.shape != teacher_box.shape:
        raise ValueError(f"student outputs {tuple(student_cls.shape)}/{tuple(student_box.shape)} and teacher outputs "
                         f"{tuple(teacher_cls.shape)}/{tuple(teacher_box.shape)} differ: the teacher needs the "
                         "student's default boxes (same anchor settings and input size)")
    zero = student_cls.sum() * 0.0 + student_box.sum() * 0.0
    if student_cls.shape[0] == 0:
        return {"loss_soft_cls": zero, "loss_soft_box": zero}
    t = float(temperature)
    kl = softened_kl(student_cls, teacher_cls, t, dim=-1)
    confident = F.softmax(teacher_cls.float(), dim=-1)[..., 1:].max(dim=-1).values >= confident_score
    if confident.any():
        box = (student_box.float()[confident] - teacher_box.float()[confident]).abs().sum(dim=-1).mean()
    else:
        box = zero
    return {"loss_soft_cls": kl.mean() * t * t, "loss_soft_box": box}
