"""An onnxruntime session run as the Predictor's network, and what a ``.onnx`` file says about itself.

Threads follow the compute budget: ``intra_op_num_threads`` is the node's ``cpu_threads``
(the torch thread count of the process by default), one inter-op thread, sequential
execution, and no spin-waiting between runs (spinning workers would take CPU time from the
other processes on a shared core). A file exported with a fixed batch of 1 runs a batch
frame by frame; a batch-dynamic export (``multicam_node``) runs it in one pass.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint, CheckpointError
from ..models.config import ModelConfig
from ..models.nets import OUTPUT_KEYS
from .backends import CPU_PROVIDER, session_providers

# Metadata keys of an exported file (mtl_perception.export writes them).
META_CONFIG = "mtl_perception.model_config"
META_CLASS_NAMES = "mtl_perception.class_names"
META_INPUT_SIZE = "mtl_perception.input_size"
META_RESIZE = "mtl_perception.resize"
META_MODEL_NAME = "mtl_perception.model_name"
META_SEG_LOGITS = "mtl_perception.seg_logits"  # "input": at the input size; "score_map": the FCN's scores
META_PRECISION = "mtl_perception.precision"  # "fp32" or "int8"
META_BATCH = "mtl_perception.batch"  # "1" or "dynamic"
META_CALIBRATION = "mtl_perception.calibration"  # int8: JSON of the source, frames and agreement with fp32


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (the weights are not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for a damaged file
        raise CheckpointError(f"{path}: cannot read the ONNX file (truncated or corrupt): {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def onnx_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A weightless :class:`Checkpoint` describing an exported ``.onnx`` file (config, class
    names, name; ``metadata`` holds the file's ``mtl_perception.*`` entries)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    meta = read_metadata(path)
    if META_CONFIG not in meta or META_CLASS_NAMES not in meta:
        raise CheckpointError(f"{path}: not an mtl_perception export (no {META_CONFIG} / {META_CLASS_NAMES} metadata; "
                              "export it with mtl-export --format onnx)")
    try:
        config = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
        class_names = json.loads(meta[META_CLASS_NAMES])
        if META_INPUT_SIZE in meta:
            config.input_size = tuple(json.loads(meta[META_INPUT_SIZE]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid mtl_perception metadata: {exc}") from exc
    metadata = {"name": meta.get(META_MODEL_NAME) or f"{config.kind}-{config.trunk}",
                **{k: v for k, v in meta.items() if k.startswith("mtl_perception.")}}
    return Checkpoint(config, class_names, {}, metadata, path)


@dataclass(frozen=True)
class EngineInfo:
    """What ran: ``engine`` (torch or onnxruntime), ``execution_provider`` and ``precision``;
    ``model_file`` is the ``.onnx`` file (None for torch)."""

    engine: str
    execution_provider: str
    precision: str
    model_file: str | None = None

    def describe(self) -> str:
        return f"{self.engine} {self.execution_provider} {self.precision}"


class OnnxSession:
    """The network of an exported file, as the Predictor's ``forward``.

    Args:
        path: the ``.onnx`` file.
        device_type: ``cpu`` or ``cuda`` (the GPU providers this install has, then the CPU's).
        threads: intra-op threads (0 = onnxruntime's default, every core).
    """

    def __init__(self, path: str | os.PathLike, device_type: str = "cpu", threads: int = 1):
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only (the quantized norm weights warn at load)
        self.threads = options.intra_op_num_threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=session_providers(device_type))
        except Exception as exc:  # onnxruntime raises its own types for an unreadable model
            raise CheckpointError(f"{self.path}: onnxruntime cannot load it: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if not set(self.output_names) <= set(OUTPUT_KEYS):
            raise CheckpointError(f"{self.path}: outputs {self.output_names} are not mtl_perception head outputs {OUTPUT_KEYS}")
        batch = self.session.get_inputs()[0].shape[0]
        self.dynamic_batch = not isinstance(batch, int)
        self.execution_provider = self.session.get_providers()[0] if self.session.get_providers() else CPU_PROVIDER

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for a float32 [B, 3, H, W] batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.dynamic_batch or batch.shape[0] == 1:
            values = self.session.run(self.output_names, {self.input_name: batch})
            return dict(zip(self.output_names, values))
        parts = [self.session.run(self.output_names, {self.input_name: batch[i:i + 1]}) for i in range(batch.shape[0])]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.output_names)}
