"""The one inference path: image in, class mask and boxes in original pixels out.

The ROS nodes, the evaluator, the benchmark and the exporter all run models through
:class:`Predictor`, so a figure measured in one is the figure of the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, load_checkpoint
from .models.nets import BBOX_REGRESSION, CLS_LOGITS, OUTPUT_KEYS, SEG_LOGITS
from .postprocess import DetectionParams, decode_detections, segmentation_masks

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("torch", "onnxruntime")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class StageTimings:
    """Wall time of each stage of one prediction, in milliseconds."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Prediction:
    """Outputs for one image, in the original image's pixel coordinates.

    ``mask`` is [H, W] uint8 class indices (None without a segmentation branch);
    ``boxes`` [N, 4] float32 XYXY, ``scores`` [N] float32, ``labels`` [N] int64 detection
    class indices (empty without a detection branch).
    """

    mask: np.ndarray | None
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    timings: StageTimings = field(default_factory=StageTimings)
    image_size: tuple[int, int] = (0, 0)


def resolve_device(device: str) -> torch.device:
    """Apply the device policy: ``auto`` (CUDA, else CPU with a warning), ``cuda`` (fail without it), ``cpu``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise RuntimeError("device 'cuda' was requested but CUDA is not available (torch.cuda.is_available() is False)")
    log.warning("CUDA is not available: running on the CPU (set device: cpu to silence this warning)")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp16 has no fast CPU path: it falls back to fp32 there with a warning; bf16 runs on both."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 is not supported on the CPU: using fp32")
        return "fp32"
    return precision


class Predictor:
    """Runs a checkpoint on single images.

    Args:
        checkpoint: path or loaded :class:`Checkpoint`.
        device: ``auto`` | ``cuda`` | ``cpu``.
        precision: ``fp32`` | ``fp16`` | ``bf16`` (autocast; fp16 falls back to fp32 on CPU).
        input_size: (H, W) the image is resized to; default the checkpoint's.
        detection: postprocess settings (score threshold, NMS IoU, max detections, allow-list).
        channels_last: NHWC memory format on CUDA (faster convolutions with tensor cores).
        cuda_graph: capture the network in a CUDA graph (fixed input size; CUDA only).
        warmup: forward passes run at construction (cuDNN autotuning, allocator, graph capture).
        backend: ``torch``, or ``onnxruntime`` with ``onnx_path`` (an export of this checkpoint).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | Checkpoint,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        detection: DetectionParams | None = None,
        channels_last: bool = True,
        cuda_graph: bool = False,
        warmup: int = 1,
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
    ):
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.config = self.checkpoint.config
        self.class_names = self.checkpoint.class_names
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.input_size = tuple(int(v) for v in (input_size or self.config.input_size))
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (H, W) with both >= 32, got {self.input_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.detection_params = detection or DetectionParams()
        if self.config.has_detection:
            self.detection_params.validate(self.config.num_det_classes)
        self.model = self.checkpoint.build_model().to(self.device)
        # The model now owns the weights: keep the checkpoint's description, not a second copy.
        self.checkpoint = dataclasses.replace(self.checkpoint, state_dict={})
        self.channels_last = channels_last and self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.anchors = self.model.anchors(self.input_size, self.device) if self.config.has_detection else None
        self._session = None
        if backend == "onnxruntime":
            self._session = _onnx_session(onnx_path, self.device)
        self._graph = None
        if cuda_graph:
            if self.device.type != "cuda" or backend != "torch":
                raise ValueError("cuda_graph needs device cuda and the torch backend")
            self._capture_graph()
        for _ in range(max(0, warmup)):
            self.predict(np.zeros((*self.input_size, 3), dtype=np.uint8))

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    @property
    def model_name(self) -> str:
        return self.checkpoint.model_name

    # -- configuration -------------------------------------------------------------------------

    def class_indices(self, names: list[str]) -> tuple[int, ...]:
        """Detection class indices for names; ``ValueError`` naming unknown ones."""
        known = self.class_names.get("detection", [])
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown detection class name(s) {unknown}; known: {known}")
        return tuple(known.index(n) for n in names)

    def set_detection_params(self, params: DetectionParams) -> None:
        """Validate and swap in new postprocess settings (atomic for concurrent callers)."""
        params.validate(self.config.num_det_classes if self.config.has_detection else None)
        self.detection_params = params

    # -- inference -----------------------------------------------------------------------------

    def predict(self, image: np.ndarray) -> Prediction:
        """Run one HxWx3 uint8 RGB image; returns outputs in its own pixel coordinates."""
        _check_image(image)
        params = self.detection_params
        original_size = (int(image.shape[0]), int(image.shape[1]))
        start = time.perf_counter()
        with torch.inference_mode():
            batch = self.preprocess(image)
            self._sync()
            t_pre = time.perf_counter()
            outputs = self.forward(batch, original_size)
            self._sync()
            t_inf = time.perf_counter()
            prediction = self.postprocess(outputs, original_size, params)
            t_post = time.perf_counter()
        prediction.timings = StageTimings(
            (t_pre - start) * 1e3, (t_inf - t_pre) * 1e3, (t_post - t_inf) * 1e3, (t_post - start) * 1e3
        )
        return prediction

    __call__ = predict

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 → [1, 3, h, w] float in [0, 255] at the input size, on the device."""
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        tensor = tensor.permute(2, 0, 1).unsqueeze(0).float()
        if tuple(tensor.shape[-2:]) != self.input_size:
            tensor = F.interpolate(tensor, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def forward(self, batch: torch.Tensor, original_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Raw head outputs for a preprocessed batch.

        With ``original_size`` the torch backend returns segmentation logits at that size
        (see :meth:`PerceptionNet.forward`); exported backends and the CUDA graph return
        them at the input size and the postprocess resizes.
        """
        if self._session is not None:
            names = [o.name for o in self._session.get_outputs()]
            values = self._session.run(None, {self._session.get_inputs()[0].name: batch.cpu().numpy()})
            return {name: torch.from_numpy(value).to(self.device) for name, value in zip(names, values)}
        if self._graph is not None:
            self._static_input.copy_(batch)
            self._graph.replay()
            return self._static_output
        with self._autocast():
            return self.model(batch, original_size)

    def postprocess(self, outputs: dict[str, torch.Tensor], original_size: tuple[int, int],
                    params: DetectionParams | None = None) -> Prediction:
        """Raw outputs for one image → :class:`Prediction` in original pixels."""
        params = params or self.detection_params
        mask = None
        if SEG_LOGITS in outputs:
            mask = segmentation_masks(outputs[SEG_LOGITS], [original_size])[0].cpu().numpy()
        if CLS_LOGITS in outputs:
            det = decode_detections(outputs[CLS_LOGITS], outputs[BBOX_REGRESSION], self.anchors,
                                    self.input_size, [original_size], params)[0]
            boxes = det["boxes"].cpu().numpy().astype(np.float32)
            scores = det["scores"].cpu().numpy().astype(np.float32)
            labels = det["labels"].cpu().numpy().astype(np.int64)
        else:
            boxes, scores, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return Prediction(mask, boxes, scores, labels, image_size=original_size)

    # -- device memory -------------------------------------------------------------------------

    def gpu_memory_mb(self) -> tuple[float, float]:
        """(allocated, reserved) CUDA memory in MB; (0, 0) on the CPU."""
        if self.device.type != "cuda":
            return 0.0, 0.0
        return torch.cuda.memory_allocated(self.device) / 2**20, torch.cuda.memory_reserved(self.device) / 2**20

    def release(self) -> None:
        """Drop the model and return cached GPU memory; the predictor is unusable afterwards."""
        self.model = None
        self._graph = None
        self._static_input = self._static_output = None
        self._session = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def empty_cache(self) -> None:
        """Return cached CUDA blocks to the driver (after an out-of-memory error, or when idle)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- internals -----------------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _capture_graph(self) -> None:
        self._static_input = torch.zeros(1, 3, *self.input_size, device=self.device)
        if self.channels_last:
            self._static_input = self._static_input.contiguous(memory_format=torch.channels_last)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                with self._autocast():
                    self.model(self._static_input)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            with self._autocast():
                self._static_output = self.model(self._static_input)
        self._graph = graph


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")


def _onnx_session(path: str | os.PathLike | None, device: torch.device):
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"onnxruntime backend needs an exported model file, got {path!r}")
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(path), providers=providers)
    names = [o.name for o in session.get_outputs()]
    if not set(names) <= set(OUTPUT_KEYS):
        raise ValueError(f"{path}: outputs {names} are not mtl_perception head outputs {OUTPUT_KEYS}")
    return session
