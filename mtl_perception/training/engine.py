"""One training step and one evaluation pass (used by the trainer, the report and tests)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import MultitaskLoss
from ..metrics import ConfusionMatrix, DetectionEvaluator
from ..models.nets import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS, PerceptionNet
from ..postprocess import DetectionParams, decode_detections, segmentation_masks

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LOSS_KEYS = ("loss", "loss_seg", "loss_box", "loss_cls")


class TrainingModule(nn.Module):
    """Network plus loss in one module, so DDP synchronises the learned task weights too.

    ``forward(images, targets)`` returns the loss dict of :class:`MultitaskLoss`.
    """

    def __init__(self, model: PerceptionNet, loss: MultitaskLoss):
        super().__init__()
        self.model = model
        self.loss = loss
        anchors = model.anchors(model.config.input_size) if model.config.has_detection else torch.zeros(0, 4)
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        outputs = self.model(images)
        return self.loss(outputs, targets, self.anchors if self.model.config.has_detection else None)


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
) -> dict[str, float]:
    """Forward, backward (scaled for fp16), optional clipping, optimizer step.

    Args:
        module: a :class:`TrainingModule`, possibly wrapped in DDP.
        images: uint8 [B, 3, H, W] on the device; targets: per-sample dicts on the device.
        parameters: everything the optimizer updates (for gradient clipping).
    Returns:
        Loss parts as floats, plus ``grad_norm`` (before clipping; NaN when not clipped)
        and ``skipped`` (1.0 when the fp16 scaler skipped the step).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(images.device, amp):
        losses = module(images, targets)
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


def resize_for_model(image: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, H, W] → float [3, h, w] in [0, 255] at the input size (as the Predictor does)."""
    tensor = image.float().unsqueeze(0)
    if tuple(tensor.shape[-2:]) != tuple(input_size):
        tensor = F.interpolate(tensor, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    return tensor[0]


@torch.no_grad()
def evaluate(
    model: PerceptionNet,
    batches: Iterable[list[tuple[torch.Tensor, dict]]],
    class_names: dict[str, list[str]],
    device: torch.device,
    detection: DetectionParams | None = None,
    amp: str = "none",
) -> dict[str, Any]:
    """mIoU and detection AP of ``model`` on samples at their original size.

    Images are resized to the model's input size like the :class:`Predictor` does; masks
    and boxes come from the shared postprocess at the original size and are scored against
    the untouched labels. Each sample counts for the tasks it is labelled for.

    Args:
        batches: lists of ``(image uint8 [3, H, W], target)`` samples (any sizes).
    Returns:
        ``seg_miou``, ``seg_iou`` (per class name), ``seg_pixel_accuracy`` (with a
        segmentation branch); ``det_voc_ap50`` (all-point VOC AP at IoU 0.5, mean over
        classes), ``det_voc07_ap50``, ``det_coco_map``, ``det_coco_ap50``, ``det_per_class_ap50``
        (with a detection branch); ``score``: mean of ``seg_miou`` and ``det_voc_ap50``
        (those present); ``num_images``.
    """
    config = model.config
    detection = detection or DetectionParams(score_threshold=0.01, max_detections=200)
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(config.num_seg_classes) if config.has_segmentation else None
    evaluator = DetectionEvaluator(class_names["detection"]) if config.has_detection else None
    anchors = model.anchors(config.input_size, device) if config.has_detection else None
    seen_seg = seen_det = num_images = 0
    try:
        for batch in batches:
            samples = [(image, target) for image, target in batch
                       if ("mask" in target and confusion is not None) or ("boxes" in target and evaluator is not None)]
            if not samples:
                continue
            inputs = torch.stack([resize_for_model(image, config.input_size) for image, _ in samples]).to(device)
            original_sizes = [tuple(image.shape[-2:]) for image, _ in samples]
            with autocast_context(device, amp):
                outputs = model(inputs)
            masks = segmentation_masks(outputs[SEG_LOGITS].float(), original_sizes) if confusion is not None else None
            detections = (decode_detections(outputs[CLS_LOGITS], outputs[BBOX_REGRESSION], anchors, config.input_size,
                                            original_sizes, detection) if evaluator is not None else None)
            for index, (_, target) in enumerate(samples):
                num_images += 1
                if confusion is not None and "mask" in target:
                    confusion.update(masks[index].cpu().long(), torch.as_tensor(target["mask"]).long())
                    seen_seg += 1
                if evaluator is not None and "boxes" in target:
                    found = detections[index]
                    gt_boxes = torch.as_tensor(target["boxes"]).reshape(-1, 4).float()
                    difficult = target.get("difficult")
                    evaluator.add((seen_det, target.get("image_id")), found["boxes"].cpu(), found["scores"].cpu(),
                                  found["labels"].cpu(), gt_boxes, torch.as_tensor(target["labels"]),
                                  None if difficult is None else torch.as_tensor(difficult).bool())
                    seen_det += 1
    finally:
        model.train(was_training)
    metrics: dict[str, Any] = {"num_images": num_images}
    primary = []
    if confusion is not None and seen_seg:
        seg = confusion.compute()
        metrics["seg_miou"] = seg["miou"]
        metrics["seg_iou"] = dict(zip(class_names["segmentation"], seg["iou"]))
        metrics["seg_pixel_accuracy"] = seg["pixel_accuracy"]
        primary.append(seg["miou"])
    if evaluator is not None and seen_det:
        det = evaluator.compute()
        metrics["det_voc_ap50"] = det["voc_map"]
        metrics["det_voc07_ap50"] = det["voc07_map"]
        metrics["det_coco_map"] = det["coco_map"]
        metrics["det_coco_ap50"] = det["coco_ap50"]
        metrics["det_per_class_ap50"] = det["per_class_ap_voc"]
        metrics["det_num_detections"] = det["num_detections"]
        primary.append(det["voc_map"])
    finite = [value for value in primary if not math.isnan(value)]
    metrics["score"] = sum(finite) / len(finite) if finite else math.nan
    return metrics
