"""Training state for ``--resume``: everything needed to continue a run bit for bit.

The file (``state.pt`` in the run folder) holds plain tensors, lists and scalars only, so
it is read with ``torch.load(weights_only=True)``:

* ``model``, ``optimizer``, ``scheduler``, ``grad_scaler``, ``loss`` (learned task weights)
  state dicts; ``sampler``: the interleaved sampler's position;
* ``rng``: torch (CPU and every CUDA device), numpy and Python ``random`` states;
* ``epoch``, ``step``, ``best`` (best metric so far), ``history`` (evaluations so far);
* ``config``: the run's config as a dict.

It is written atomically (temp file + fsync + rename), so a run killed at any moment
leaves either the previous state or the new one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_torch_save

STATE_FORMAT = "mtl_perception.training_state"
STATE_VERSION = 1


class TrainingStateError(RuntimeError):
    """A training-state file is missing, unreadable or from another run; names the file."""


def capture_rng_state() -> dict[str, Any]:
    """All RNG states as tensors and lists."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss": python_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["state"].tolist()),
                     python_state["gauss"]))


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see module docstring) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, path)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file with ``weights_only=True``.

    Raises:
        TrainingStateError: missing, unreadable, or not a training state of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingStateError(f"{path}: training state not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or holding pickled objects
        raise TrainingStateError(f"{path}: cannot read training state: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{path}: not an mtl_perception training state")
    if state.get("format_version") != STATE_VERSION:
        raise TrainingStateError(f"{path}: training state version {state.get('format_version')!r} is not "
                                 f"supported (this build reads {STATE_VERSION})")
    return state
