"""Ignored regions (VisDrone's category 0): when a box counts as lying inside them.

One rule serves training and evaluation: a box is in the ignored regions when at least
:data:`IGNORE_REGION_OVERLAP` of its own area is covered by them. The SSD loss then treats an
unmatched anchor there as neither positive nor negative
(:func:`mtl_perception.losses.ignored_anchors`), and the detection evaluator drops ground truth
and detections there before matching, as the VisDrone toolkit's ``dropObjectsInIgr.m`` does
(it keeps a box only when ``covered / (w * h) < 0.5``).

Regions reach both as the sample's ``ignore_mask`` ([H, W], 1 inside a region; other values,
such as a letterbox's padding, are not regions), in the pixels of the boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_REGION_OVERLAP = 0.5  # covered fraction of a box's own area from which it counts as ignored


def ignored_fraction(boxes: torch.Tensor, ignore_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each box's area covered by the ignored regions.

    Args:
        boxes: [N, 4] XYXY in the pixels of ``ignore_mask``; edges are rounded to whole pixels.
        ignore_mask: [H, W], 1 inside ignored regions.
    Returns:
        float64 [N]: covered pixels (from an integral image; area outside the mask counts as
        not ignored) over the box's area; 0 for boxes of zero area.
    """
    inside = (ignore_mask == 1).to(torch.float64)
    height, width = inside.shape
    integral = F.pad(inside.cumsum(0).cumsum(1), (1, 0, 1, 0))
    boxes = boxes.to(device=inside.device)
    x0 = boxes[:, 0].round().clamp(0, width).long()
    x1 = boxes[:, 2].round().clamp(0, width).long()
    y0 = boxes[:, 1].round().clamp(0, height).long()
    y1 = boxes[:, 3].round().clamp(0, height).long()
    covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(torch.float64)
    return torch.where(area > 0, covered / area.clamp(min=1e-9), torch.zeros_like(covered))


def in_ignored_regions(boxes: torch.Tensor, ignore_mask: torch.Tensor,
                       min_overlap: float = IGNORE_REGION_OVERLAP) -> torch.Tensor:
    """bool [N]: the boxes whose :func:`ignored_fraction` is at least ``min_overlap``."""
    return ignored_fraction(boxes, ignore_mask) >= min_overlap


__all__ = ["IGNORE_REGION_OVERLAP", "ignored_fraction", "in_ignored_regions"]
