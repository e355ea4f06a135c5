"""One training step and one evaluation pass (used by the trainer, the report and tests)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..evaluation.scores import TaskScores
from ..losses import MultitaskLoss, soft_detection_loss, soft_segmentation_loss
from ..models.nets import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS, PerceptionNet
from ..postprocess import DetectionParams
from ..predictor import Predictor

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LOSS_KEYS = ("loss", "loss_seg", "loss_box", "loss_cls", "loss_soft_seg", "loss_soft_cls", "loss_soft_box")


class TrainingModule(nn.Module):
    """Network plus loss in one module, so DDP synchronises the learned task weights too.

    ``forward(images, targets, soft)`` returns the loss dict of :class:`MultitaskLoss`, plus the
    soft terms against the teachers' outputs in ``soft`` (:meth:`Teachers.label
    <mtl_perception.training.teachers.Teachers.label>`), each weighted into ``loss``.
    """

    def __init__(self, model: PerceptionNet, loss: MultitaskLoss):
        super().__init__()
        self.model = model
        self.loss = loss
        anchors = model.anchors(model.config.input_size) if model.config.has_detection else torch.zeros(0, 4)
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: torch.Tensor, targets: list[dict], soft: dict | None = None) -> dict[str, torch.Tensor]:
        outputs = self.model(images)
        losses = self.loss(outputs, targets, self.anchors if self.model.config.has_detection else None)
        if soft:
            total = losses["loss"]
            if "segmentation" in soft:
                term = soft["segmentation"]
                losses["loss_soft_seg"] = soft_segmentation_loss(outputs[SEG_LOGITS][term["index"]], term["logits"],
                                                                 term["temperature"])
                total = total + term["weight"] * losses["loss_soft_seg"]
            if "detection" in soft:
                term = soft["detection"]
                index = term["index"]
                losses.update(soft_detection_loss(outputs[CLS_LOGITS][index], outputs[BBOX_REGRESSION][index],
                                                  term["cls_logits"], term["bbox_regression"], term["temperature"],
                                                  term["confident_score"]))
                total = total + term["weight"] * (losses["loss_soft_cls"] + losses["loss_soft_box"])
            losses["loss"] = total
        return losses


def move_targets(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
            for t in targets]


def autocast_context(device: torch.device, amp: str):
    """``torch.autocast`` for fp16/bf16 on CUDA; a no-op otherwise."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def train_step(
    module: nn.Module,
    images: torch.Tensor,
    targets: list[dict],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    parameters: Sequence[nn.Parameter],
    amp: str = "none",
    grad_clip: float | None = None,
    soft: dict | None = None,
) -> dict[str, float]:
    """Forward, backward (scaled for fp16), optional clipping, optimizer step.

    Args:
        module: a :class:`TrainingModule`, possibly wrapped in DDP.
        images: uint8 [B, 3, H, W] on the device; targets: per-sample dicts on the device.
        soft: the teachers' outputs for the soft terms (see :class:`TrainingModule`), or None.
        parameters: everything the optimizer updates (for gradient clipping).
    Returns:
        Loss parts as floats, plus ``grad_norm`` (before clipping; NaN when not clipped)
        and ``skipped`` (1.0 when the fp16 scaler skipped the step).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(images.device, amp):
        losses = module(images, targets, soft) if soft else module(images, targets)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()} (parts: "
                                 f"{ {k: float(v) for k, v in losses.items()} }); lower the lr or enable grad_clip")
    scaler.scale(loss).backward()
    grad_norm = math.nan
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, grad_clip))
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.is_enabled() and scaler.get_scale() < scale_before
    result = {k: float(v.detach()) for k, v in losses.items() if k in LOSS_KEYS}
    result["grad_norm"] = grad_norm
    result["skipped"] = float(skipped)
    return result


@torch.no_grad()
def evaluate(
    model: PerceptionNet,
    batches: Iterable[list[tuple[torch.Tensor, dict]]],
    class_names: dict[str, list[str]],
    device: torch.device,
    detection: DetectionParams | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    """Accuracy of ``model`` on samples at their original size, through the deployed path.

    Every batch goes through :meth:`Predictor.predict_batch` of a predictor over ``model``
    (:meth:`Predictor.from_model`: same fitting to the input size, stretch or letterbox,
    same postprocess as the node), and masks and boxes at the original size are scored
    against the untouched labels by :class:`~mtl_perception.evaluation.scores.TaskScores`.
    Each sample counts for the tasks it is labelled for.

    Args:
        batches: lists of ``(image uint8 [3, H, W], target)`` samples (any sizes).
        amp: ``none`` | ``fp16`` | ``bf16``: the predictor's precision on CUDA (fp32 on the CPU).
    Returns:
        ``num_images`` and the keys of :mod:`mtl_perception.evaluation.scores` (``seg_miou``,
        ``seg_iou``, ``det_voc_ap50``, ..., ``score``), the same keys as ``mtl-eval``.
    """
    config = model.config
    precision = "fp32" if amp == "none" or device.type != "cuda" else amp
    predictor = Predictor.from_model(model, class_names, device=str(device), precision=precision,
                                     detection=detection or DetectionParams(score_threshold=0.01, max_detections=200))
    scores = TaskScores(config.tasks, class_names)
    num_images = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            samples = [(image, target) for image, target in batch if scores.labelled_tasks(target)]
            if not samples:
                continue
            predictions = predictor.predict_batch([image.permute(1, 2, 0) for image, _ in samples])
            for prediction, (_, target) in zip(predictions, samples):
                scores.add((num_images, target.get("image_id")), prediction, target)
                num_images += 1
    finally:
        model.train(was_training)
    return {"num_images": num_images, **scores.compute()}
