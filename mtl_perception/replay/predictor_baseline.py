"""The bare Predictor(s) of a graph on the replay's frames: what the ROS graph adds on top."""

from __future__ import annotations

import time

import numpy as np

from mtl_perception.evaluation.report import latency_summary
from mtl_perception.ros.paths import resolve_package_path

BASELINE_SAMPLES = 20  # Predictor-only timings (frames repeated when the bag is shorter)


def predictor_baseline(parameters: dict[str, dict], nodes: list[str], frames: list[np.ndarray],
                       threads: int | None = None) -> dict:
    """Per-frame wall time of the graph's networks run one after the other in this process.

    Run before the graph starts (nothing competes) and, by the caller, on the graph's CPU
    set, so both sides of the overhead ratio get the same budget.

    Args:
        parameters: node → parameters (:func:`mtl_perception.graphs.graph.node_parameters`).
        nodes: the graph's inference nodes.
        frames: (H, W, 3) uint8 RGB images.
        threads: torch threads (default the first node's ``cpu_threads``; 0 = torch's default).

    Returns:
        ``predictor_p50_ms``, ``frames``, ``device``, ``class_names`` (task → names), ``engines``
        (node → engine, execution provider and precision; the nodes' own engine parameters).
    """
    from mtl_perception.predictor_settings import predictor_from_parameters

    predictors = []
    for node in nodes:
        params = dict(parameters[node])
        if threads is not None:
            params["cpu_threads"] = threads
        predictors.append(predictor_from_parameters(params, resolve_package_path))
    for predictor in predictors:  # first calls pay for lazy initialisation, as the nodes' warm-up does
        for image in frames[:2]:
            predictor.predict(image)
    times = []
    for image in (frames * (1 + BASELINE_SAMPLES // max(1, len(frames))))[:max(BASELINE_SAMPLES, len(frames))]:
        start = time.perf_counter()
        for predictor in predictors:
            predictor.predict(image)
        times.append((time.perf_counter() - start) * 1e3)
    info = {"predictor_p50_ms": latency_summary(times)["p50"], "frames": len(times),
            "device": str(predictors[0].device) if predictors else "n/a", "class_names": {},
            "engines": {node: predictor.engine.describe() for node, predictor in zip(nodes, predictors)}}
    for predictor in predictors:
        info["class_names"].update(predictor.class_names)
        predictor.release()
    return info
