"""The one inference path: image in, class mask and boxes in original pixels out.

The ROS nodes, the evaluator, training validation, the benchmark and the exporter all run
models through :class:`Predictor`, so a figure measured in one is the figure of the others.

On CUDA the whole path runs on the device: the uint8 frame is uploaded once (from pinned
memory); the resize (stretch or letterbox, as the model was trained), normalisation,
network, argmax at the original size, palette colouring and box decoding run there; only
the mono8 mask, the colour image (when asked for) and the boxes come back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, load_checkpoint
from .engines.backends import BACKENDS, EngineError, resolve_backend
from .engines.onnx_session import META_INPUT_SIZE, META_PRECISION, EngineInfo, OnnxSession, onnx_checkpoint, read_metadata
from .letterbox import ResizeGeometry, pad_value, resize_geometry, resize_to_input
from .models.nets import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS, PerceptionNet, build_model
from .postprocess import DetectionParams, colorize_masks, decode_detections, segmentation_masks
from .visualization import segmentation_palette

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")  # and "cuda:N", a CUDA device by index
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # int8: onnxruntime on the CPU (mtl_perception.engines)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class StageTimings:
    """Wall time of each stage of one prediction (of the whole batch for :meth:`Predictor.predict_batch`), in ms."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Prediction:
    """Outputs for one image, in the original image's pixel coordinates.

    ``mask`` is [H, W] uint8 class indices (None without a segmentation branch);
    ``boxes`` [N, 4] float32 XYXY, ``scores`` [N] float32, ``labels`` [N] int64 detection
    class indices (empty without a detection branch); ``color`` [H, W, 3] uint8 RGB, the
    mask in the segmentation palette, only when asked for (``predict(image, color=True)``).
    """

    mask: np.ndarray | None
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    timings: StageTimings = field(default_factory=StageTimings)
    color: np.ndarray | None = None


def resolve_device(device: str) -> torch.device:
    """Apply the device policy: ``auto`` (CUDA, else CPU with a warning), ``cuda`` or ``cuda:N``
    (fail without it), ``cpu``."""
    index = None
    if isinstance(device, str) and device.startswith("cuda:"):
        if not device[5:].isdigit():
            raise ValueError(f"device must be auto, cuda, cuda:N or cpu, got {device!r}")
        index = int(device[5:])
    elif device not in DEVICES:
        raise ValueError(f"device must be auto, cuda, cuda:N or cpu, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if index is None:
            return torch.device("cuda")
        count = torch.cuda.device_count()
        if index >= count:
            raise RuntimeError(f"device {device!r} was requested but only {count} CUDA device(s) are visible")
        return torch.device("cuda", index)
    if device != "auto":
        raise RuntimeError(f"device {device!r} was requested but CUDA is not available (torch.cuda.is_available() is False)")
    log.warning("CUDA is not available: running on the CPU (set device: cpu to silence this warning)")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp16 has no fast CPU path: it falls back to fp32 there with a warning; bf16 runs on both;
    int8 is checked against the engine (:func:`~mtl_perception.engines.backends.resolve_backend`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 is not supported on the CPU: using fp32")
        return "fp32"
    return precision


def resolve_compile_mode(mode: str | None, device: torch.device, cuda_graph: bool) -> str:
    """The ``torch.compile`` mode: ``mode`` if given, else the batch-1 choice for the device.

    On CUDA ``reduce-overhead``: at batch 1 the network is launch-bound, and that mode
    replays the compiled kernels as CUDA graphs. With ``cuda_graph`` the Predictor captures
    its own graph around the compiled network, so the mode is ``default`` (graphs once, not
    twice). On the CPU ``default``. ``max-autotune*`` modes tune kernels for minutes: opt in.
    """
    if mode is None:
        return "reduce-overhead" if device.type == "cuda" and not cuda_graph else "default"
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
    if cuda_graph and mode == "reduce-overhead":
        raise ValueError("compile_mode 'reduce-overhead' already uses CUDA graphs: use it without cuda_graph")
    return mode


@dataclass
class _CapturedGraph:
    graph: "torch.cuda.CUDAGraph"
    inputs: torch.Tensor
    outputs: dict[str, torch.Tensor]


class Predictor:
    """Runs a checkpoint on images, one at a time or as a batch, with one of two engines.

    Args:
        checkpoint: path of a ``.pt`` checkpoint or of a ``.onnx`` export (its metadata carries
            the config and class names), or a loaded :class:`Checkpoint`.
        device: ``auto`` | ``cuda`` | ``cuda:N`` | ``cpu``.
        precision: ``fp32`` | ``fp16`` | ``bf16`` (torch autocast; fp16 falls back to fp32 on
            CPU) | ``int8`` (onnxruntime on the CPU: an int8 ``.onnx`` checkpoint, or a ``.pt``
            one with ``calibration``).
        input_size: (H, W) the image is fitted to; default the checkpoint's (a ``.onnx`` file's
            is the size it was exported at). How it is fitted (``stretch`` or ``letterbox``) is
            the checkpoint's ``resize``, what it was trained with.
        detection: postprocess settings (score threshold, NMS IoU, max detections, allow-list).
        channels_last: NHWC memory format on CUDA (faster convolutions with tensor cores).
        cuda_graph: run the network as CUDA graphs, one captured per batch size in use (the
            first use of a batch size captures it; batch 1 at construction). CUDA only.
        warmup: forward passes run at construction (cuDNN autotuning, allocator, graph capture).
        backend: ``torch``, ``onnxruntime`` or ``auto`` (:func:`~mtl_perception.engines.backends.resolve_backend`:
            onnxruntime on the CPU; the nodes' default). onnxruntime runs a ``.onnx`` checkpoint,
            ``onnx_path``, or the export of a ``.pt`` checkpoint from the engine cache (exported
            on first use). None (this class's default): onnxruntime for a ``.onnx`` checkpoint or
            ``onnx_path``, else torch.
        onnx_path: an export of this checkpoint to run with onnxruntime (instead of the cache's).
        compile: run the network through ``torch.compile`` (torch backend); compiled at
            construction, the time it took in :attr:`compile_s`.
        compile_mode: the ``torch.compile`` mode; default :func:`resolve_compile_mode`'s choice.
        model: run this in-memory network (used as is, not copied) instead of building one
            from the checkpoint's weights; the checkpoint then only describes it (see :meth:`from_model`).
        threads: onnxruntime intra-op threads; default torch's thread count in this process
            (a node sets it from ``cpu_threads``), so both engines get the same budget.
        engine_cache_dir: the engine cache (default :func:`~mtl_perception.engines.onnx_cache.default_cache_dir`).
        calibration: int8 from a ``.pt`` checkpoint: a rosbag or image folder, or a
            :class:`~mtl_perception.engines.calibration.CalibrationSet`.
        calibration_frames: frames taken from ``calibration``, spread evenly over it.
        dynamic_batch: onnxruntime: export with a dynamic batch, so :meth:`predict_batch` runs
            one pass (otherwise a batch runs frame by frame through a batch-1 export).

    Attributes:
        backend: the engine that runs (``torch`` or ``onnxruntime``), after ``auto``.
        engine: :class:`~mtl_perception.engines.onnx_session.EngineInfo`: engine, execution
            provider, precision and model file, for every report.
        engine_cache: the engine cache entry used (``built`` says whether this call exported it), or None.
        compile_s: seconds the compilation took (0 without ``compile``).
        warmup_s: seconds the ``warmup`` passes took after compiling (graph capture included).
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
        backend: str | None = None,
        onnx_path: str | os.PathLike | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
        model: PerceptionNet | None = None,
        threads: int | None = None,
        engine_cache_dir: str | os.PathLike | None = None,
        calibration=None,
        calibration_frames: int | None = None,
        dynamic_batch: bool = False,
    ):
        onnx_file = None
        if isinstance(checkpoint, Checkpoint):
            self.checkpoint = checkpoint
        elif str(checkpoint).endswith(".onnx"):
            self.checkpoint = onnx_checkpoint(checkpoint)
            onnx_file = Path(checkpoint)
        else:
            self.checkpoint = load_checkpoint(checkpoint)
        onnx_file = Path(onnx_path) if onnx_path is not None else onnx_file
        self.config = self.checkpoint.config
        self.class_names = self.checkpoint.class_names
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.input_size = tuple(int(v) for v in (input_size or self.config.input_size))
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (H, W) with both >= 32, got {self.input_size}")
        torch_only = ("an in-memory network" if model is not None else "cuda_graph" if cuda_graph
                      else "compile" if compile else None)
        if backend is None:
            backend = "onnxruntime" if onnx_file is not None else "torch"
        self.backend = resolve_backend(backend, self.device.type, self.precision, torch_only=torch_only,
                                       onnx_file=onnx_file is not None)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph needs device cuda")
        self.resize = self.config.resize
        self.pad_fill = pad_value(self.config.mean)
        self.detection_params = detection or DetectionParams()
        if self.config.has_detection:
            self.detection_params.validate(self.config.num_det_classes)
        self._session: OnnxSession | None = None
        self.engine_cache = None
        if self.backend == "onnxruntime":
            # The network runs in onnxruntime: no torch weights are kept, only a weightless
            # description of the network (anchors, score-map size, parameter count).
            with torch.device("meta"):
                shell = build_model(self.config)
            self._session = self._onnx_engine(onnx_file, threads, engine_cache_dir, calibration, calibration_frames,
                                              dynamic_batch)
            self.checkpoint = dataclasses.replace(self.checkpoint, state_dict={})
            self.model = None
            self.engine = EngineInfo("onnxruntime", self._session.execution_provider, self.precision,
                                     str(self._session.path))
        else:
            if model is None:
                model = self.checkpoint.build_model()
                # The model now owns the weights: keep the checkpoint's description, not a second copy.
                self.checkpoint = dataclasses.replace(self.checkpoint, state_dict={})
            elif model.config != self.config:
                raise ValueError("the model's config differs from the checkpoint's")
            shell = self.model = model.to(self.device)
            self.engine = EngineInfo("torch", str(self.device), self.precision)
        self._parameter_count = int(sum(t.numel() for t in shell.parameters()))
        self.channels_last = channels_last and self.device.type == "cuda" and self.model is not None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.anchors = shell.anchors(self.input_size, self.device) if self.config.has_detection else None
        self.box_coder = shell.box_coder
        self._palette = (torch.from_numpy(segmentation_palette(256)).to(self.device)
                         if self.config.has_segmentation else None)
        self._pad_fill = torch.tensor(self.pad_fill, dtype=torch.float32, device=self.device)
        # Stretched input: the FCN scores come unresampled and the postprocess resizes them once,
        # straight to each frame's size. Letterboxed: at the input size, to crop the padding.
        self._seg_output_size = (shell.score_map_size(self.input_size)
                                 if self.config.has_segmentation and self.resize == "stretch" else None)
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, _CapturedGraph] = {}
        self._graph_pool = None
        self.compile_mode = resolve_compile_mode(compile_mode, self.device, cuda_graph) if compile else None
        self._network = (torch.compile(self.model, mode=self.compile_mode, dynamic=False)
                         if compile else self.model)
        self.compile_s = self.warmup_s = 0.0
        dummy = np.zeros((*self.input_size, 3), dtype=np.uint8)
        if compile:
            start = time.perf_counter()
            with self._device_context(), torch.inference_mode():
                self._network_outputs(self.preprocess(dummy), self._seg_output_size)
                self._sync()
            self.compile_s = time.perf_counter() - start
        start = time.perf_counter()
        if cuda_graph:
            with self._device_context():
                self._capture_graph(1)
        for _ in range(max(0, warmup)):
            self.predict(dummy)
        self.warmup_s = time.perf_counter() - start

    def _onnx_engine(self, onnx_file: Path | None, threads: int | None, cache_dir, calibration,
                     calibration_frames: int | None, dynamic_batch: bool) -> OnnxSession:
        """The onnxruntime session: of ``onnx_file``, else of the engine cache's export of the checkpoint."""
        from .engines import onnx_cache

        if onnx_file is not None:
            if not onnx_file.is_file():
                raise FileNotFoundError(f"onnxruntime backend: model file {onnx_file} not found")
            meta = read_metadata(onnx_file)
            exported = tuple(json.loads(meta[META_INPUT_SIZE])) if META_INPUT_SIZE in meta else None
            if exported is not None and self.input_size != exported:
                raise ValueError(f"{onnx_file} was exported at input size {exported[0]}x{exported[1]}, not "
                                 f"{self.input_size[0]}x{self.input_size[1]}: give the .pt checkpoint for other sizes")
            file_precision = meta.get(META_PRECISION, "fp32")
            if file_precision != self.precision:
                raise EngineError(f"{onnx_file} is an {file_precision} model but precision is {self.precision!r}: "
                                  f"set precision {file_precision}")
        elif self.precision == "int8":
            self.engine_cache = onnx_cache.cached_int8(self.checkpoint, self.input_size,
                                                       _calibration(calibration, calibration_frames), cache_dir,
                                                       dynamic_batch)
            onnx_file = self.engine_cache.path
        else:
            self.engine_cache = onnx_cache.cached_onnx(self.checkpoint, self.input_size, cache_dir, dynamic_batch)
            onnx_file = self.engine_cache.path
        return OnnxSession(onnx_file, self.device.type, torch.get_num_threads() if threads is None else threads)

    @classmethod
    def from_model(cls, model: PerceptionNet, class_names: dict[str, list[str]], **kwargs) -> "Predictor":
        """A predictor over an in-memory network (training validation), used as is, not copied.

        ``kwargs`` are the constructor's (``warmup`` defaults to 0 here, ``channels_last`` to
        False, so the caller's network keeps its memory format).
        """
        kwargs.setdefault("warmup", 0)
        kwargs.setdefault("channels_last", False)
        checkpoint = Checkpoint(model.config, class_names, {}, {"name": f"{model.config.kind}-{model.config.trunk}"})
        return cls(checkpoint, model=model, **kwargs)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    @property
    def model_name(self) -> str:
        return self.checkpoint.model_name

    @property
    def parameter_count(self) -> int:
        """Parameters of the network (whichever engine runs it)."""
        return self._parameter_count

    @property
    def onnx_session(self) -> OnnxSession | None:
        """The onnxruntime session (None with the torch backend)."""
        return self._session

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

    def predict(self, image: np.ndarray, color: bool = False) -> Prediction:
        """Run one HxWx3 uint8 RGB image; returns outputs in its own pixel coordinates.

        Args:
            image: [H, W, 3] uint8 RGB, a numpy array (or a uint8 tensor, on any device).
            color: also return :attr:`Prediction.color`, coloured on the device.
        """
        return self._run([image], color)[0]

    __call__ = predict

    def predict_batch(self, images: Sequence[np.ndarray], color: bool = False) -> list[Prediction]:
        """Run several images, of any sizes, as one batch through the network.

        Each is fitted to the input size and its outputs are mapped back to its own pixels,
        by the same pre- and postprocess as :meth:`predict`. Every prediction carries the
        timings of the whole batch. With ``cuda_graph`` each batch size gets its own graph,
        captured on first use; with ``compile`` each new batch size compiles once (shapes are static).
        On a CPU one batched pass is not necessarily faster than one pass per frame (it was
        1.6x slower for MobileNetV2 320x320 at batch 4 on one core of the development VM).
        """
        return self._run(list(images), color)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 → [1, 3, h, w] float in [0, 255] at the input size, on the device
        (stretched or letterboxed as the model was trained)."""
        return self._preprocess([image])[0]

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head outputs for a preprocessed batch.

        Segmentation logits of a stretched input come at the FCN's score resolution
        (:meth:`PerceptionNet.score_map_size`; the postprocess resizes them once to each
        frame's size); of a letterboxed input at the input size (the postprocess crops the
        padding and resizes). Both engines return the same outputs (this project's exports
        keep the torch path's convention; ``mtl_perception.seg_logits`` in the file says which).
        Outputs of a CUDA graph are valid until the next call.
        """
        if self._session is not None:
            values = self._session.run(batch.cpu().numpy())
            return {name: torch.from_numpy(value).to(self.device) for name, value in values.items()}
        if self.cuda_graph:
            captured = self._graphs.get(batch.shape[0]) or self._capture_graph(batch.shape[0])
            captured.inputs.copy_(batch)
            captured.graph.replay()
            return captured.outputs
        return self._network_outputs(batch, self._seg_output_size)

    def postprocess(self, outputs: dict[str, torch.Tensor], original_size: tuple[int, int],
                    params: DetectionParams | None = None, color: bool = False) -> Prediction:
        """Raw outputs for one image of ``original_size`` (H, W) → :class:`Prediction` in its pixels."""
        geometry = resize_geometry(original_size, self.input_size, self.resize)
        return self._postprocess(outputs, [geometry], params or self.detection_params, color)[0]

    # -- device memory -------------------------------------------------------------------------

    def gpu_memory_mb(self) -> tuple[float, float]:
        """(allocated, reserved) CUDA memory in MB; (0, 0) on the CPU."""
        if self.device.type != "cuda":
            return 0.0, 0.0
        return torch.cuda.memory_allocated(self.device) / 2**20, torch.cuda.memory_reserved(self.device) / 2**20

    def release(self) -> None:
        """Drop the model and return cached GPU memory; the predictor is unusable afterwards."""
        self.model = self._network = None
        self._graphs = {}
        self._graph_pool = None
        self._session = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def empty_cache(self) -> None:
        """Return cached CUDA blocks to the driver (after an out-of-memory error, or when idle)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- internals -----------------------------------------------------------------------------

    def _run(self, images: list, color: bool) -> list[Prediction]:
        if not images:
            return []
        for image in images:
            _check_image(image)
        params = self.detection_params
        with self._device_context(), torch.inference_mode():
            start = time.perf_counter()
            batch, geometries = self._preprocess(images)
            self._sync()
            t_pre = time.perf_counter()
            outputs = self.forward(batch)
            self._sync()
            t_inf = time.perf_counter()
            predictions = self._postprocess(outputs, geometries, params, color)
            t_post = time.perf_counter()
        for prediction in predictions:
            prediction.timings = StageTimings((t_pre - start) * 1e3, (t_inf - t_pre) * 1e3, (t_post - t_inf) * 1e3,
                                              (t_post - start) * 1e3)
        return predictions

    def _preprocess(self, images: list) -> tuple[torch.Tensor, list[ResizeGeometry]]:
        """Upload each uint8 frame once, fit it to the input on the device, stack."""
        frames, geometries = [], []
        for image in images:
            frame = self._upload(image).permute(2, 0, 1).unsqueeze(0)
            geometry = resize_geometry(frame.shape[-2:], self.input_size, self.resize)
            frames.append(resize_to_input(frame, geometry, self._pad_fill))
            geometries.append(geometry)
        batch = frames[0] if len(frames) == 1 else torch.cat(frames)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, geometries

    def _upload(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
        if tensor.device == self.device:
            return tensor
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _postprocess(self, outputs: dict[str, torch.Tensor], geometries: list[ResizeGeometry],
                     params: DetectionParams, color: bool) -> list[Prediction]:
        """Masks, colours and boxes on the device; only they are copied back."""
        count = len(geometries)
        masks = colors = [None] * count
        if SEG_LOGITS in outputs:
            masks = segmentation_masks(outputs[SEG_LOGITS], geometries)
            if color:
                colors = [colorize_masks(mask, self._palette).cpu().numpy() for mask in masks]
            masks = [mask.cpu().numpy() for mask in masks]
        predictions = []
        if CLS_LOGITS in outputs:
            found = decode_detections(outputs[CLS_LOGITS], outputs[BBOX_REGRESSION], self.anchors, geometries,
                                      params, self.box_coder)
            for index, det in enumerate(found):
                # One copy per image: boxes, score and label packed in [N, 6].
                packed = torch.cat([det["boxes"], det["scores"][:, None], det["labels"][:, None].float()], 1).cpu()
                predictions.append(Prediction(masks[index], packed[:, :4].numpy().astype(np.float32),
                                              packed[:, 4].numpy().astype(np.float32),
                                              packed[:, 5].numpy().astype(np.int64), color=colors[index]))
        else:
            for index in range(count):
                predictions.append(Prediction(masks[index], np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                              np.zeros(0, np.int64), color=colors[index]))
        return predictions

    def _network_outputs(self, batch: torch.Tensor, seg_output_size: tuple[int, int] | None) -> dict[str, torch.Tensor]:
        if self.compile_mode == "reduce-overhead":
            # Inductor's CUDA graphs: the previous call's outputs are no longer read (copied back already).
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            return self._network(batch, seg_output_size)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def _device_context(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _capture_graph(self, batch_size: int) -> _CapturedGraph:
        """Capture the network at this batch size; graphs share one memory pool (they never run at once)."""
        static_input = torch.zeros(batch_size, 3, *self.input_size, device=self.device)
        if self.channels_last:
            static_input = static_input.contiguous(memory_format=torch.channels_last)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                self._network_outputs(static_input, self._seg_output_size)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._graph_pool):
            static_output = self._network_outputs(static_input, self._seg_output_size)
        self._graphs[batch_size] = _CapturedGraph(graph, static_input, static_output)
        return self._graphs[batch_size]


def _check_image(image: np.ndarray | torch.Tensor) -> None:
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    shape = tuple(image.shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {shape}")
    if image.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"image is empty: shape {shape}")


def _calibration(source, frames: int | None):
    """A CalibrationSet from what ``Predictor(calibration=...)`` was given."""
    from .engines.calibration import DEFAULT_CALIBRATION_FRAMES, CalibrationSet, calibration_set

    if isinstance(source, CalibrationSet):
        return source
    if not source:
        raise EngineError("precision 'int8' from a .pt checkpoint needs calibration frames (a rosbag or an image "
                          "folder: calibration), or give an int8 .onnx checkpoint made by mtl-export --int8")
    return calibration_set(source, frames or DEFAULT_CALIBRATION_FRAMES)
