"""One inference node's parameters → its :class:`~mtl_perception.predictor.Predictor`, without ROS.

``InferenceNode.on_configure`` (and ``multicam_node`` through it) and the replay's bare-Predictor
baseline both build their predictor with :func:`predictor_from_parameters` from the same
parameter dict (a node's ``ros__parameters``), so both run identical engines, sizes, threads
and postprocess settings: the two sides of the node-overhead ratio do equal work.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .engines.calibration import DEFAULT_CALIBRATION_FRAMES
from .postprocess import DetectionParams
from .predictor import Predictor

# Parameters that decide the postprocess (the baseline must match the node on all of them).
POSTPROCESS_PARAMETERS = ("score_threshold", "nms_iou", "max_detections", "class_allowlist", "input_height",
                          "input_width")
# Parameters that decide the engine and the compute it gets.
ENGINE_PARAMETERS = ("checkpoint", "device", "backend", "precision", "cpu_threads", "cuda_graph", "engine_cache_dir",
                     "calibration", "calibration_frames")
DEFAULTS = {"device": "auto", "backend": "auto", "precision": "fp32", "engine_cache_dir": "", "calibration": "",
            "calibration_frames": DEFAULT_CALIBRATION_FRAMES, "input_height": 0, "input_width": 0,
            "score_threshold": 0.3, "nms_iou": 0.45, "max_detections": 100, "class_allowlist": None,
            "cpu_threads": 0, "cuda_graph": False}


def settings(parameters: Mapping[str, object]) -> dict[str, object]:
    """The predictor-deciding subset of ``parameters``, defaults filled in (what equal work compares)."""
    values = {name: parameters.get(name, DEFAULTS.get(name)) for name in (*ENGINE_PARAMETERS, *POSTPROCESS_PARAMETERS)}
    values["class_allowlist"] = list(values["class_allowlist"] or [])
    return values


def input_size(parameters: Mapping[str, object]) -> tuple[int, int] | None:
    """(H, W) from ``input_height``/``input_width``; None for the checkpoint's; ValueError for one set alone."""
    height, width = int(parameters.get("input_height") or 0), int(parameters.get("input_width") or 0)
    if bool(height) != bool(width) or height < 0 or width < 0:
        raise ValueError(f"input_height={height} and input_width={width}: set both to positive sizes, "
                         "or both to 0 for the checkpoint's input size")
    return (height, width) if height else None


def detection_params(parameters: Mapping[str, object], class_names: list[str] | None) -> DetectionParams:
    """The postprocess settings of ``parameters``; the allowlist's class names looked up in ``class_names``
    (ValueError naming unknown ones)."""
    values = {**DEFAULTS, **{k: v for k, v in parameters.items() if v is not None}}
    allowlist = list(values.get("class_allowlist") or [])
    indices = None
    if allowlist:
        known = list(class_names or [])
        unknown = [n for n in allowlist if n not in known]
        if unknown:
            raise ValueError(f"unknown detection class name(s) {unknown}; known: {known}")
        indices = tuple(known.index(n) for n in allowlist)
    max_detections = int(values["max_detections"])
    return DetectionParams(score_threshold=float(values["score_threshold"]), nms_iou=float(values["nms_iou"]),
                           max_detections=max_detections, class_allowlist=indices,
                           pre_nms_top_k=max(DetectionParams.pre_nms_top_k, max_detections))


def predictor_from_parameters(parameters: Mapping[str, object], resolve_path: Callable[[str], object] = str,
                              **options) -> Predictor:
    """A :class:`Predictor` as an inference node with ``parameters`` builds it.

    Sets torch's thread count from ``cpu_threads`` (> 0), as the node does for its whole process.

    Args:
        parameters: the node's parameters (missing ones take the nodes' defaults).
        resolve_path: maps ``checkpoint`` and ``calibration`` to files (the nodes resolve them
            against the package share directory).
        options: more Predictor arguments (multicam: ``dynamic_batch``).
    """
    import torch

    values = {**DEFAULTS, **{k: v for k, v in parameters.items() if v is not None}}
    checkpoint = str(values.get("checkpoint") or "")
    if not checkpoint:
        raise ValueError("parameter 'checkpoint' is empty: set it to a model checkpoint (.pt)")
    size = input_size(values)
    threads = int(values["cpu_threads"])
    if threads > 0:
        torch.set_num_threads(threads)
    calibration = values["calibration"]
    predictor = Predictor(resolve_path(checkpoint), device=str(values["device"]), precision=str(values["precision"]),
                          input_size=size, cuda_graph=bool(values["cuda_graph"]), backend=str(values["backend"]),
                          threads=threads if threads > 0 else None,
                          engine_cache_dir=values["engine_cache_dir"] or None,
                          calibration=resolve_path(str(calibration)) if calibration else None,
                          calibration_frames=int(values["calibration_frames"]), **options)
    predictor.set_detection_params(detection_params(values, predictor.class_names.get("detection")))
    return predictor
