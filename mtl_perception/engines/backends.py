"""Which engine runs a network: the ``backend`` policy and the precisions each engine takes.

``auto`` (the nodes' default) is onnxruntime on the CPU, and on CUDA torch unless the
installed onnxruntime has the CUDA or TensorRT execution provider. It also falls back to
torch for what only torch does: an in-memory network, ``cuda_graph``, ``compile`` and
autocast precisions (``fp16``, ``bf16``). ``torch`` and ``onnxruntime`` are taken as asked,
and a precision the engine cannot run is an error naming both.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
ENGINE_PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32", "int8")}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class EngineError(ValueError):
    """An engine, precision or device that cannot go together; the message names them."""


def available_providers() -> tuple[str, ...]:
    """onnxruntime's execution providers in this install (empty without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def session_providers(device_type: str, available: tuple[str, ...] | None = None) -> list[str]:
    """The providers an onnxruntime session asks for, best first: on CUDA the GPU ones this
    install has (CUDA before TensorRT: TensorRT builds engines for minutes at start), then the CPU."""
    available = available_providers() if available is None else available
    providers = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in available] \
        if device_type == "cuda" else []
    return providers + [CPU_PROVIDER]


def resolve_backend(backend: str, device_type: str, precision: str = "fp32", *, torch_only: str | None = None,
                    onnx_file: bool = False, available: tuple[str, ...] | None = None) -> str:
    """``torch`` or ``onnxruntime`` for ``backend`` on a ``device_type`` (``cpu`` or ``cuda``) device.

    Args:
        precision: the precision asked for (checked against the chosen engine).
        torch_only: why only torch can run this (an in-memory network, ``cuda_graph``,
            ``compile``), or None.
        onnx_file: the checkpoint is a ``.onnx`` file (only onnxruntime runs it).
        available: onnxruntime's providers (default this install's).

    Raises:
        EngineError: an unknown backend or precision, or a pair that cannot run; the message
            names the backend, the precision (or option) and the device.
    """
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    available = available_providers() if available is None else available
    if backend == "auto":
        backend = _auto(device_type, precision, torch_only, onnx_file, available)
    if backend == "onnxruntime":
        if torch_only:
            raise EngineError(f"backend 'onnxruntime' cannot run {torch_only}: use backend 'torch'")
        if not available:
            raise EngineError("backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)")
        if precision not in ENGINE_PRECISIONS["onnxruntime"]:
            raise EngineError(f"precision {precision!r} is not available with backend 'onnxruntime' (it runs "
                              f"{' or '.join(ENGINE_PRECISIONS['onnxruntime'])}): use backend 'torch' for {precision}")
        if precision == "int8" and device_type != "cpu":
            raise EngineError(f"precision 'int8' with backend 'onnxruntime' runs on the CPU only, not on device "
                              f"{device_type!r}: set device cpu, or precision fp32")
    else:
        if onnx_file:
            raise EngineError("backend 'torch' cannot run a .onnx checkpoint: use backend 'onnxruntime' or 'auto', "
                              "or give the .pt checkpoint")
        if precision == "int8":
            raise EngineError("precision 'int8' is not available with backend 'torch': int8 runs with backend "
                              "'onnxruntime' (or 'auto') on the CPU")
    return backend


def _auto(device_type: str, precision: str, torch_only: str | None, onnx_file: bool, available: tuple[str, ...]) -> str:
    if onnx_file or precision == "int8":
        return "onnxruntime"
    if torch_only or precision in ("fp16", "bf16") or not available:
        if not available and not torch_only:
            log.info("backend auto: onnxruntime is not installed, running torch")
        return "torch"
    if device_type == "cuda":
        return "onnxruntime" if any(p in available for p in CUDA_PROVIDERS) else "torch"
    return "onnxruntime"


def check_engine_precision(backend: str, precision: str) -> None:
    """EngineError unless ``precision`` is one ``backend`` (resolved) can run."""
    allowed = ENGINE_PRECISIONS.get(backend, ())
    if precision not in allowed:
        raise EngineError(f"precision {precision!r} is not available with backend {backend!r} "
                          f"(it runs {' or '.join(allowed)})")
