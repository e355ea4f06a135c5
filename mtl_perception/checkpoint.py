"""Model checkpoints: one file holds everything needed to rebuild and run a network.

Contents (plain tensors, lists and scalars, so ``torch.load(weights_only=True)`` reads
it and no pickled code ever runs):

* ``format`` / ``format_version``: identify the file;
* ``model_config``: :class:`ModelConfig` as a dict (architecture, tasks, input size,
  ``resize`` mode, normalisation); fields added later take their defaults when an older file
  lacks them (a checkpoint without ``resize`` is ``stretch``, what it was trained with);
* ``class_names``: ``{"segmentation": [...], "detection": [...]}`` for the model's tasks
  (segmentation names include background at index 0; detection names exclude it);
* ``state_dict``: the weights (optionally stored as float16 to halve the file);
* ``metadata``: free-form provenance (training command, data, metrics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_output
from .models.config import ModelConfig
from .models.nets import PerceptionNet, build_model

FORMAT = "mtl_perception.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or inconsistent; the message names the file."""


@dataclass
class Checkpoint:
    """A loaded (or to-be-saved) model checkpoint."""

    config: ModelConfig
    class_names: dict[str, list[str]]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def model_name(self) -> str:
        """Human name, e.g. ``multitask-mobilenet_v2`` (or ``metadata['name']``)."""
        return str(self.metadata.get("name") or f"{self.config.kind}-{self.config.trunk}")

    def build_model(self) -> PerceptionNet:
        """A network with these weights, in eval mode, on the CPU.

        The network is built on the meta device and takes the checkpoint's tensors
        (``assign=True``), so the weights are never allocated twice.
        """
        with torch.device("meta"):
            model = build_model(self.config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        result = model.load_state_dict(state, strict=False, assign=True)
        problems = list(result.missing_keys) + list(result.unexpected_keys)
        if problems:
            where = self.path or "checkpoint"
            raise CheckpointError(
                f"{where}: weights do not match the {self.config.kind} {self.config.trunk} architecture "
                f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected, e.g. {problems[:3]})"
            )
        model.reset_non_persistent_buffers()
        return model.eval()

    def to_payload(self, weights_dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        state = {
            k: (v.detach().to("cpu", weights_dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in self.state_dict.items()
        }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_config": self.config.to_dict(),
            "class_names": {k: list(v) for k, v in self.class_names.items()},
            "state_dict": state,
            "metadata": dict(self.metadata),
        }


def make_checkpoint(model: PerceptionNet, class_names: dict[str, list[str]], metadata: dict[str, Any] | None = None) -> Checkpoint:
    """Wrap a network and its class names, checking they agree with its config."""
    _check_class_names(model.config, class_names, "model")
    return Checkpoint(model.config, class_names, model.state_dict(), dict(metadata or {}))


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write atomically (temp file in the same folder, then rename): never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(checkpoint.to_payload(weights_dtype), path)
    return path


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` whole or not at all (see :func:`mtl_perception.atomic.atomic_output`)."""
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Checkpoint:
    """Read and validate a checkpoint.

    ``mmap=True`` maps the weights instead of reading them (cheap when only the class
    names or config are wanted).

    Raises:
        CheckpointError: missing, corrupt or truncated file, not a checkpoint of this
            project, an unsupported format version, or an inconsistent architecture.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for bad files; classify by what it says
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), "")
            raise CheckpointError(f"{path}: refused to load checkpoint: it holds pickled objects, not plain tensors "
                                  f"and data ({detail})") from exc
        kind = "truncated or corrupt" if _looks_truncated(exc) else "corrupt or not a PyTorch file"
        raise CheckpointError(f"{path}: cannot read checkpoint ({kind}): {text.splitlines()[0] if text else exc!r}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mtl_perception checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported (this build reads {FORMAT_VERSION})")
    for key in ("model_config", "class_names", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid architecture config: {exc}") from exc
    try:
        _check_class_names(config, payload["class_names"], str(path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    checkpoint = Checkpoint(config, payload["class_names"], payload["state_dict"], payload.get("metadata") or {}, path)
    _check_state_dict(checkpoint)
    return checkpoint


def _check_class_names(config: ModelConfig, class_names: dict, where: str) -> None:
    expected = {"segmentation": config.num_seg_classes, "detection": config.num_det_classes}
    for task in config.tasks:
        names = class_names.get(task)
        if not isinstance(names, list) or len(names) != expected[task]:
            got = len(names) if isinstance(names, list) else names
            raise ValueError(f"{where}: {task} needs {expected[task]} class names, got {got}")


def _check_state_dict(checkpoint: Checkpoint) -> None:
    """Compare tensor names and shapes against the architecture without building weights twice."""
    with torch.device("meta"):
        reference = build_model(checkpoint.config).state_dict()
    state = checkpoint.state_dict
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    wrong = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(reference[k].shape)})")
        raise CheckpointError(
            f"{checkpoint.path}: weights do not fit the {checkpoint.config.kind} {checkpoint.config.trunk} "
            f"architecture: {'; '.join(detail)}"
        )


def _looks_truncated(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("central directory", "truncated", "unexpected end", "eof", "failed finding"))
