"""The ONNX export cache: a ``.pt`` checkpoint is exported once per key and reused.

Where: ``engine_cache_dir`` if given, else ``$MTL_ENGINE_CACHE_DIR``, else
``$XDG_CACHE_HOME/mtl_perception``, else ``~/.cache/mtl_perception``.

The key covers what changes the exported file: the checkpoint's content (config, class
names and every weight, not the file's bytes or name), the input size, the resize mode, the
opset, a batch of 1 or dynamic, the torch, onnx and onnxruntime versions, this exporter's
version and, for int8, the calibration frames' digest and the quantization settings.

Each entry is ``<name>.onnx`` beside ``<name>.json``, its manifest (the key's fields, the
file's size and SHA-256). Both are written atomically (temp file, fsync, rename), the model
first. An entry is used only when its manifest matches the key and the file its size and
digest; anything else (truncated, corrupt, half-written by a killed process, manifest
missing) is rebuilt. Builders of one entry take an exclusive ``flock`` on ``<name>.lock``
and look again once they hold it, so two processes configuring at once export once and
never read each other's half-written files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import write_json_atomic
from ..checkpoint import Checkpoint

log = logging.getLogger(__name__)

CACHE_ENV = "MTL_ENGINE_CACHE_DIR"
EXPORTER_VERSION = 1  # bump when the exported graph changes for the same inputs


def default_cache_dir() -> Path:
    """``$MTL_ENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtl_perception``, else ``~/.cache/mtl_perception``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mtl_perception"


def resolve_cache_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override).expanduser() if override else default_cache_dir()


def checkpoint_digest(checkpoint: Checkpoint) -> str:
    """SHA-256 of what the network computes: config, class names and every tensor (name, dtype,
    shape, bytes). The same weights saved twice give the same digest; one changed weight does not."""
    import torch

    sha = hashlib.sha256()
    sha.update(json.dumps(checkpoint.config.to_dict(), sort_keys=True).encode())
    sha.update(json.dumps(checkpoint.class_names, sort_keys=True).encode())
    for name in sorted(checkpoint.state_dict):
        tensor = checkpoint.state_dict[name].detach().cpu().contiguous()
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return sha.hexdigest()


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "exporter": str(EXPORTER_VERSION)}


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A usable cache entry: the ``.onnx`` ``path``, its ``key``, and whether this call ``built`` it
    (and in how many ``seconds``) or found it."""

    path: Path
    key: str
    built: bool
    seconds: float = 0.0


def entry_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def entry_name(model_name: str, input_size: tuple[int, int], precision: str, dynamic_batch: bool, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name) or "model"
    batch = "-dynbatch" if dynamic_batch else ""
    return f"{safe}-{input_size[0]}x{input_size[1]}-{precision}{batch}-{key[:16]}"


def valid_entry(directory: Path, name: str, key: str) -> Path | None:
    """The entry's ``.onnx`` if its manifest matches ``key`` and the file its size and digest, else None."""
    model, manifest = directory / f"{name}.onnx", directory / f"{name}.json"
    try:
        recorded = json.loads(manifest.read_text())
        if recorded.get("key") != key or not model.is_file():
            return None
        if model.stat().st_size != recorded.get("size") or file_digest(model) != recorded.get("sha256"):
            log.warning("engine cache: %s does not match its manifest (truncated or changed): rebuilding it", model)
            return None
    except (OSError, ValueError):
        return None
    return model


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cached(directory: Path, name: str, fields: dict, build: Callable[[Path], dict | None]) -> CacheEntry:
    """The entry ``name`` for ``fields``, built by ``build(path)`` (which writes ``path`` atomically
    and may return more manifest fields) when missing or invalid."""
    key = entry_key(fields)
    found = valid_entry(directory, name, key)
    if found is not None:
        return CacheEntry(found, key, built=False)
    with _locked(directory / f"{name}.lock"):
        found = valid_entry(directory, name, key)  # another process may have built it meanwhile
        if found is not None:
            return CacheEntry(found, key, built=False)
        model = directory / f"{name}.onnx"
        start = time.perf_counter()
        extra = build(model) or {}
        seconds = time.perf_counter() - start
        write_json_atomic(directory / f"{name}.json", {"key": key, "fields": fields, "size": model.stat().st_size,
                                                        "sha256": file_digest(model), "build_s": round(seconds, 3),
                                                        **extra})
    log.info("engine cache: built %s in %.1f s", model, seconds)
    return CacheEntry(model, key, built=True, seconds=seconds)


def cached_onnx(checkpoint: Checkpoint, input_size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
                dynamic_batch: bool = False, opset: int | None = None) -> CacheEntry:
    """The fp32 ONNX export of ``checkpoint`` at ``input_size`` (exported now if not cached)."""
    from ..export import DEFAULT_OPSET, export_onnx

    opset = opset or DEFAULT_OPSET
    size = (int(input_size[0]), int(input_size[1]))
    fields = _base_fields(checkpoint, size, opset, dynamic_batch)
    directory = resolve_cache_dir(cache_dir)
    name = entry_name(checkpoint.model_name, size, "fp32", dynamic_batch, entry_key(fields))
    return cached(directory, name, fields,
                  lambda path: export_onnx(checkpoint, path, size, opset=opset, dynamic_batch=dynamic_batch) and None)


def cached_int8(checkpoint: Checkpoint, input_size: tuple[int, int], calibration, cache_dir: str | os.PathLike | None = None,
                dynamic_batch: bool = False, opset: int | None = None) -> CacheEntry:
    """The int8 model of ``checkpoint`` calibrated on ``calibration`` (a
    :class:`~mtl_perception.engines.calibration.CalibrationSet`), from the cached fp32 export."""
    from ..export import DEFAULT_OPSET
    from .quantize import QUANTIZATION_SETTINGS, quantize_int8

    opset = opset or DEFAULT_OPSET
    size = (int(input_size[0]), int(input_size[1]))
    fp32 = cached_onnx(checkpoint, size, cache_dir, dynamic_batch, opset)
    fields = {**_base_fields(checkpoint, size, opset, dynamic_batch), "precision": "int8",
              "calibration": calibration.digest, "calibration_frames": len(calibration.frames),
              "quantization": QUANTIZATION_SETTINGS}
    directory = resolve_cache_dir(cache_dir)
    name = entry_name(checkpoint.model_name, size, "int8", dynamic_batch, entry_key(fields))

    def build(path: Path) -> dict:
        return {"report": quantize_int8(fp32.path, path, calibration)}

    return cached(directory, name, fields, build)


def _base_fields(checkpoint: Checkpoint, size: tuple[int, int], opset: int, dynamic_batch: bool) -> dict:
    return {"checkpoint": checkpoint_digest(checkpoint), "input_size": list(size), "resize": checkpoint.config.resize,
            "opset": opset, "batch": "dynamic" if dynamic_batch else 1, "precision": "fp32", **library_versions()}
