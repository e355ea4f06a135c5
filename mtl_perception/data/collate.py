"""Collating samples (possibly labelled for different tasks) into a batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import Sample


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def collate_batch(samples: Sequence[Sample]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images and keep one target dict per sample.

    Args:
        samples: ``(image, target)`` pairs whose images all have the same [3,H,W] size
            (the transforms' final resize guarantees it).

    Returns:
        images: uint8 [B,3,H,W] (not normalized; the model does that).
        targets: one plain dict per sample with the same keys as its target (keys present only
            where labelled); tensors are plain ``torch.Tensor``, masks int64 [H,W].
    """
    if not samples:
        raise ValueError("collate_batch: empty batch")
    shapes = {tuple(image.shape) for image, _ in samples}
    if len(shapes) != 1:
        detail = ", ".join(f"{t.get('image_id', '?')}: {tuple(i.shape)}" for i, t in samples)
        raise ValueError(f"collate_batch: images differ in size ({detail}); resize them in the transforms")
    images = torch.stack([_plain(image) for image, _ in samples])
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"collate_batch: expected uint8 [3,H,W] images, got {images.dtype} {tuple(images.shape[1:])}")
    targets = []
    for _, target in samples:
        out = {key: _plain(value) for key, value in target.items()}
        if "mask" in out:
            out["mask"] = out["mask"].long()
        targets.append(out)
    return images, targets
