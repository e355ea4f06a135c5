"""Colour masks and overlay images (numpy + Pillow), shared by the nodes and the reports."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Box colours for detection classes (Okabe-Ito, readable on aerial imagery).
_BOX_COLOURS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167))


def segmentation_palette(num_classes: int = 256) -> np.ndarray:
    """[num_classes, 3] uint8 colours: the Pascal VOC bit-interleaved palette (background black)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE = segmentation_palette(256)


def colorize_mask(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """[H, W] class indices → [H, W, 3] uint8 RGB."""
    palette = _PALETTE if palette is None else palette
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or len(palette) < 256:
        mask = mask.astype(np.int64) % len(palette)
    return np.take(palette, mask, axis=0)  # ~5x faster than palette[mask]


def box_colour(label: int) -> tuple[int, int, int]:
    return _BOX_COLOURS[int(label) % len(_BOX_COLOURS)]


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray | None,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    detection_names: Sequence[str] = (),
    alpha: float = 0.45,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """The camera image with the class mask blended in and labelled boxes drawn.

    Args:
        image: [H, W, 3] uint8 RGB.
        mask: [H, W] class indices (background 0 is left unblended), or None.
        boxes: [N, 4] XYXY pixels; labels [N] detection class indices; scores [N].
    Returns:
        [H, W, 3] uint8 RGB.
    """
    out = image.astype(np.float32)
    if mask is not None:
        colours = colorize_mask(mask, palette).astype(np.float32)
        foreground = (np.asarray(mask) > 0)[..., None]
        out = np.where(foreground, (1 - alpha) * out + alpha * colours, out)
    canvas = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(image.shape[:2]) / 240))
    for box, label, score in zip(np.asarray(boxes), np.asarray(labels), np.asarray(scores)):
        colour = box_colour(label)
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        name = detection_names[int(label)] if int(label) < len(detection_names) else str(int(label))
        text = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), text)
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0
        draw.rectangle((x0, ty, x0 + (right - left) + 2, ty + (bottom - top) + 2), fill=colour)
        draw.text((x0 + 1, ty), text, fill=(0, 0, 0))
    return np.asarray(canvas)
