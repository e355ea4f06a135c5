"""The bare Predictor(s) of a graph on the replay's frames: what the ROS graph adds on top.

Equal work (issue: the node-overhead row compares equal work): the baseline builds each
inference node's Predictor from the node's own parameters (:func:`~mtl_perception.predictor_settings.predictor_from_parameters`:
engine, precision, threads, input size, thresholds), produces the outputs the replay
subscribes to (the colour image and the overlay only if subscribed), decodes the same
recorded messages as the node, in the same order, after the same warm-up (the Predictor's own
construction pass, then the replay's warm-up frame: the first frame once). It runs in a fresh
process (``python -m mtl_perception.replay.predictor_baseline SPEC OUT``) started on the
graph's CPU set, so no replay thread shares its interpreter or cores. The replay runs it twice,
before the graph starts and after it stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mtl_perception.evaluation.report import latency_summary
from mtl_perception.predictor_settings import ENGINE_PARAMETERS, POSTPROCESS_PARAMETERS, settings

STAGES = ("decode", "preprocess", "network", "postprocess", "render")
TASK_TOPICS = {"segmentation": "segmentation", "detection": "detections"}  # a task's answer topic (REQUIRED_TOPICS)


BAD_INPUT = 2  # the baseline process' exit code for a bad checkpoint, bag or parameter


class BaselineInputError(ValueError):
    """The baseline process could not read its checkpoint, bag or parameters (the replay exits 2)."""


class UnequalWorkError(ValueError):
    """The baseline would not do the node's work (different postprocess or engine settings)."""


def check_equal_work(node_values: dict[str, dict], baseline_parameters: dict[str, dict]) -> None:
    """Refuse a baseline whose predictor settings differ from the live nodes' (UnequalWorkError naming each).

    Args:
        node_values: node → its parameter values as read from the running node.
        baseline_parameters: node → the parameters the baseline builds its Predictor from.
    """
    differences = []
    for node, values in node_values.items():
        ours, theirs = settings(baseline_parameters.get(node, {})), settings(values)
        for name in (*POSTPROCESS_PARAMETERS, *ENGINE_PARAMETERS):
            if name in values and ours[name] != theirs[name] and name not in ("checkpoint", "calibration"):
                differences.append(f"{node}.{name}: node {theirs[name]!r}, baseline {ours[name]!r}")
    if differences:
        raise UnequalWorkError("the bare-Predictor baseline would not do the nodes' work, refused: " + "; ".join(differences))


def run_baseline_process(spec: dict, out_dir: Path, name: str, cpus: tuple[int, ...] | None,
                         env: dict[str, str] | None = None, timeout: float = 1800.0) -> dict:
    """Run :func:`measure` in a fresh process on ``cpus``; returns its result (``RuntimeError`` if it failed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = (out_dir / f"{name}_spec.json", out_dir / f"{name}.json", out_dir / f"{name}.log")
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "mtl_perception.replay.predictor_baseline", str(spec_path), str(result_path)]
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(log_path, "wb") as log:
        code = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=preexec, timeout=timeout).returncode
    if code == BAD_INPUT:  # the one line it printed says what (bad checkpoint, bag or parameters)
        lines = log_path.read_text(errors="replace").strip().splitlines()
        raise BaselineInputError(lines[-1].removeprefix("error: ") if lines else f"bad input (see {log_path})")
    if code != 0 or not result_path.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the bare-Predictor baseline ({name}) failed with exit code {code}:\n{tail}")
    return json.loads(result_path.read_text())


def measure(spec: dict) -> dict:
    """Per-frame timings of the graph's Predictors (one after the other) on the bag's frames.

    ``spec``: ``parameters`` (node → parameters), ``nodes``, ``bag``, ``camera_topic``,
    ``max_frames``, ``color`` (colour the mask: segmentation/color is subscribed), ``overlay``
    (render the overlay: it is subscribed), ``max_input_pixels``, ``passes`` (times over the
    frames, as the replay's lockstep passes; default 1).

    Returns:
        ``predictor_ms`` (per frame, Predictor.predict of every node: the ratio's denominator),
        ``predictor_p50_ms``, ``stages_ms`` (stage → per-frame ms: decode, preprocess,
        network, postprocess, render), ``frames``, ``device``, ``class_names``, ``engines``,
        ``cpus`` (this process' CPU set), ``threads`` (torch's).
    """
    import torch

    from mtl_perception.bags.reader import BagReader
    from mtl_perception.ros.paths import resolve_package_path
    from mtl_perception.predictor_settings import predictor_from_parameters
    from mtl_perception.replay.replay_messages import camera_class, deserialize

    nodes = spec["nodes"]
    predictors = [predictor_from_parameters(spec["parameters"][node], resolve_package_path) for node in nodes]
    with BagReader(spec["bag"], spec.get("camera_topic")) as bag:
        raw = [f.rawdata for f in bag.frames(decode=False)][:spec.get("max_frames")]
        message_type = camera_class(bag.camera_msgtype)
    messages = [deserialize(r, message_type) for r in raw]
    decode = _decoder(message_type, int(spec.get("max_input_pixels") or 0) or None)
    overlay = bool(spec.get("overlay"))
    color = bool(spec.get("color"))

    def one_frame(message) -> dict[str, float]:
        stages = dict.fromkeys(("predictor", *STAGES), 0.0)
        for predictor in predictors:  # each node decodes its own copy of the frame
            start = time.perf_counter()
            image = decode(message)
            stages["decode"] += (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            prediction = predictor.predict(image, color=color)
            stages["predictor"] += (time.perf_counter() - start) * 1e3
            stages["preprocess"] += prediction.timings.preprocess_ms
            stages["network"] += prediction.timings.inference_ms
            stages["postprocess"] += prediction.timings.postprocess_ms
            if overlay:
                start = time.perf_counter()
                _render(predictor, image, prediction)
                stages["render"] += (time.perf_counter() - start) * 1e3
        return stages

    one_frame(messages[0])  # the replay's warm-up frame (the Predictor already ran its construction pass)
    per_frame = [one_frame(m) for _ in range(int(spec.get("passes", 1))) for m in messages]
    info = {"predictor_ms": [f["predictor"] for f in per_frame],
            "predictor_p50_ms": latency_summary([f["predictor"] for f in per_frame])["p50"],
            "stages_ms": {s: [f[s] for f in per_frame] for s in STAGES},
            "frames": len(per_frame), "device": str(predictors[0].device), "class_names": {},
            "engines": {node: p.engine.describe() for node, p in zip(nodes, predictors)},
            "topics": {node: [TASK_TOPICS[t] for t in p.tasks if t in TASK_TOPICS] for node, p in zip(nodes, predictors)},
            "cpus": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads(), "color": color,
            "overlay": overlay}
    for predictor in predictors:
        info["class_names"].update(predictor.class_names)
        predictor.release()
    return info


def _decoder(message_type, max_pixels):
    from mtl_perception.image_msg_codec import CAMERA_MAX_PIXELS, compressed_to_array, image_to_array, to_rgb

    limit = max_pixels or CAMERA_MAX_PIXELS
    if message_type.__name__ == "CompressedImage":
        return lambda msg: compressed_to_array(msg, max_pixels=limit)
    return lambda msg: to_rgb(image_to_array(msg, max_pixels=limit), msg.encoding)


def _render(predictor, image: np.ndarray, prediction) -> None:
    from mtl_perception.visualization import render_overlay

    names = predictor.class_names.get("detection", [])
    render_overlay(image, prediction.mask, prediction.boxes, prediction.labels, prediction.scores, names)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m mtl_perception.replay.predictor_baseline SPEC.json OUT.json", file=sys.stderr)
        return 2
    from mtl_perception.atomic import write_text_atomic
    from mtl_perception.bags.errors import BagError
    from mtl_perception.checkpoint import CheckpointError

    try:
        result = measure(json.loads(Path(argv[0]).read_text()))
    except (BagError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", flush=True)
        return BAD_INPUT
    write_text_atomic(Path(argv[1]), json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
