"""Replay a rosbag through a running node graph and measure it: the paper's Table II inside ROS.

    python -m mtl_perception.ros.replay_eval --bag BAG --graph multitask|naive --out DIR
        [--mode lockstep|rate] [--rate X] [--params config/mtl_perception.yaml]
        [--checkpoint P | --segmentation-checkpoint P --detection-checkpoint P] [--device cpu]

The graph is started through the project CLI's code (:mod:`mtl_perception.ros.graph`, the
same YAML as the launch files) under the namespace ``/replay``. The bag's camera frames
are published as recorded (raw CDR bytes, header stamps kept) either in lockstep (each
frame waits for its outputs: accuracy without drops) or at the recorded rate times
``--rate``. Outputs are matched to frames by header stamp and recorded into an output
bag. The report gives accuracy against the bag's ground truth (mIoU, VOC/COCO mAP),
end-to-end latency (publish → last output received), throughput, drops, peak RSS of the
inference nodes, GPU memory from their InferenceStats, checkpoint sizes, and the
overhead of the ROS graph over the bare Predictor on the same frames.

Exit codes: 0 complete; 1 the graph failed; 2 bad bag or arguments; 3 incomplete (some
frames were never answered — the report says so and is not presented as complete).
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_perception.atomic import write_text_atomic
from mtl_perception.bags.errors import BagError
from mtl_perception.bags.reader import BagReader
from mtl_perception.bags.writer import BagWriter
from mtl_perception.checkpoint import CheckpointError
from mtl_perception.evaluation.report import (latency_summary, per_class_from, plot_latency_cdf, plot_per_class,
                                              replay_markdown, write_json)
from mtl_perception.metrics import ConfusionMatrix, DetectionEvaluator
from mtl_perception.ros.graph import DEFAULT_PARAMS, GRAPHS, node_parameters, start_graph, use_localhost_transport
from mtl_perception.ros.paths import resolve_package_path

NAMESPACE = "replay"
_WARMUP_SEC = 2_000_000_000  # stamps of warm-up frames: far from any recorded stamp
_OUTPUT_TOPICS = {  # relative topic -> message type name
    "segmentation": ("sensor_msgs.msg", "Image"),
    "detections": ("vision_msgs.msg", "Detection2DArray"),
    "stats": ("mtl_perception.msg", "InferenceStats"),
}
_ROSBAG_TYPES = {"segmentation": "sensor_msgs/msg/Image", "detections": "vision_msgs/msg/Detection2DArray",
                 "stats": "mtl_perception/msg/InferenceStats", "overlay": "sensor_msgs/msg/Image"}


class ReplayError(RuntimeError):
    """The graph failed to start or died during the replay."""


def header_stamp_ns(rawdata: bytes) -> int:
    """Header stamp of a CDR message that starts with std_msgs/Header (all our outputs)."""
    little = rawdata[1] in (0x01, 0x03)
    sec, nanosec = struct.unpack("<iI" if little else ">iI", rawdata[4:12])
    return sec * 1_000_000_000 + nanosec


def _message_type(topic: str):
    import importlib

    module, name = _OUTPUT_TOPICS.get(topic, ("sensor_msgs.msg", "Image"))
    return getattr(importlib.import_module(module), name)


@dataclass
class _Received:
    """Outputs received on one topic: (receive monotonic time, bag time ns, stamp ns, raw bytes)."""

    items: list = field(default_factory=list)
    first_by_stamp: dict = field(default_factory=dict)


class _ReplayNode:
    """rclpy side of the replay: one publisher, raw subscriptions on the outputs, a spin thread."""

    def __init__(self, camera_msgtype: str, topics: list[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtl_replay", context=self.context)
        compressed = camera_msgtype.endswith("CompressedImage")
        self.camera_topic = f"/{NAMESPACE}/camera" + ("/compressed" if compressed else "")
        self.camera_type = CompressedImage if compressed else Image
        self.publisher = self.node.create_publisher(self.camera_type, self.camera_topic, qos_profile_sensor_data)
        self.received: dict[str, _Received] = {}
        self.condition = threading.Condition()
        self._reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic in topics:
            self.subscribe(topic)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def subscribe(self, topic: str) -> None:
        self.received[topic] = _Received()
        self.node.create_subscription(_message_type(topic), f"/{NAMESPACE}/{topic}",
                                      lambda raw, t=topic: self._callback(t, raw), self._reliable, raw=True)

    def _callback(self, topic: str, raw: bytes) -> None:
        now = time.monotonic()
        stamp = header_stamp_ns(raw)
        with self.condition:
            record = self.received[topic]
            record.items.append((now, time.time_ns(), stamp, raw))
            record.first_by_stamp.setdefault(stamp, now)
            self.condition.notify_all()

    def publish_raw(self, rawdata: bytes) -> float:
        self.publisher.publish(rawdata)
        return time.monotonic()

    def publish_with_stamp(self, rawdata: bytes, stamp_sec: int) -> None:
        from rclpy.serialization import deserialize_message

        message = deserialize_message(rawdata, self.camera_type)
        message.header.stamp.sec, message.header.stamp.nanosec = stamp_sec, 0
        self.publisher.publish(message)

    def answered(self, stamp: int, topics: list[str]) -> bool:
        return all(stamp in self.received[t].first_by_stamp for t in topics)

    def wait_answered(self, stamp: int, topics: list[str], timeout: float, alive) -> bool:
        deadline = time.monotonic() + timeout
        with self.condition:
            while not self.answered(stamp, topics):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(min(remaining, 0.5))
                alive()
        return True

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5.0)


class _MemorySampler:
    """Peak RSS of each node process (and its children), sampled every 0.2 s."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_mb = {name: 0.0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for name, process in self._processes.items():
                try:
                    rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
                except psutil.Error:
                    continue
                self.peak_mb[name] = max(self.peak_mb[name], rss / 2**20)
            self._stop.wait(0.2)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=2.0)
        return dict(self.peak_mb)


def _inference_nodes(graph: str) -> list[str]:
    return [s.executable for s in GRAPHS[graph] if s.inference]


# Both graphs answer a frame with a mask and a detection array; a frame is done when both arrived.
REQUIRED_TOPICS = ["segmentation", "detections"]
RESEND_S = 5.0
BASELINE_SAMPLES = 20  # Predictor-only timings (frames repeated when the bag is shorter)


def predictor_baseline(parameters: dict[str, dict], nodes: list[str], frames: list[np.ndarray]) -> dict:
    """Per-frame wall time of the bare Predictor(s) of the graph's inference nodes on the same frames,
    run one after the other in this process (before the graph starts, so nothing competes)."""
    import torch

    from mtl_perception.predictor import Predictor

    threads = int(parameters[nodes[0]].get("cpu_threads", 0))
    if threads > 0:  # the nodes' setting, so both sides of the overhead ratio compute alike
        torch.set_num_threads(threads)
    predictors = []
    for node in nodes:
        params = parameters[node]
        size = (int(params.get("input_height", 0)), int(params.get("input_width", 0)))
        predictors.append(Predictor(resolve_package_path(str(params["checkpoint"])), device=str(params.get("device", "auto")),
                                    precision=str(params.get("precision", "fp32")), input_size=size if all(size) else None))
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
            "device": str(predictors[0].device) if predictors else "n/a",
            "class_names": {}}
    for predictor in predictors:
        info["class_names"].update(predictor.class_names)
        predictor.release()
    return info


def _check_alive(graph_processes) -> None:
    exited = graph_processes.exited()
    if exited:
        name, code = next(iter(exited.items()))
        raise ReplayError(f"{name} exited with code {code} during the replay:\n{graph_processes.log_tail(name)}")


def run_replay(bag_path: str | Path, graph: str, out_dir: str | Path, mode: str = "lockstep", rate: float = 1.0,
               params_file: str = DEFAULT_PARAMS, arguments: dict | None = None, max_frames: int | None = None,
               frame_timeout: float = 60.0, startup_timeout: float = 180.0, overlays: int = 3,
               camera_topic: str | None = None, record: bool = True, baseline_frames: int = 20,
               localhost: bool = True) -> dict:
    """Replay ``bag_path`` through ``graph``; writes the report into ``out_dir`` and returns it.

    ``localhost`` runs the graph and this process on the localhost Fast DDS profile
    (config/fastdds_localhost.xml) unless FASTDDS_DEFAULT_PROFILES_FILE is already set.

    Raises:
        BagError: the bag is missing, empty, corrupt or lacks the camera topic.
        ReplayError: the graph failed to start or died.
    """
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {sorted(GRAPHS)}")
    if mode not in ("lockstep", "rate"):
        raise ValueError(f"mode must be lockstep or rate, got {mode!r}")
    if rate <= 0:
        raise ValueError("rate must be positive")
    out_dir = Path(out_dir)
    arguments = dict(arguments or {})
    if localhost:  # before rclpy creates this process' participant; the graph inherits it
        use_localhost_transport(os.environ)
    with BagReader(bag_path, camera_topic) as bag:
        frames = list(bag.frames(decode=True))[:max_frames]
        truth_boxes = bag.ground_truth_detections()
        truth_masks = bag.ground_truth_masks()
        bag_classes = {"detection": bag.detection_classes, "segmentation": bag.segmentation_classes}
        camera_msgtype = bag.camera_msgtype
    if not frames:
        raise BagError(f"bag {bag_path}: no camera frames to replay")
    if camera_msgtype.endswith("CompressedImage"):
        arguments["input_transport"] = "compressed"
    parameters = node_parameters(graph, params_file, arguments)
    nodes = _inference_nodes(graph)
    for node in nodes:
        if not parameters[node].get("checkpoint"):
            raise ValueError(f"{node} has no checkpoint (YAML {params_file} or arguments)")
    print(f"[replay] {graph}: measuring the bare Predictor on {min(baseline_frames, len(frames))} frames", flush=True)
    baseline = predictor_baseline(parameters, nodes, [f.image for f in frames[:baseline_frames]])
    warnings: list[str] = []
    topics = REQUIRED_TOPICS + ["stats"]
    log_dir = out_dir / "logs"
    graph_processes = start_graph(graph, params_file, NAMESPACE, f"/{NAMESPACE}/camera", arguments, log_dir=log_dir)
    sampler = replay = None
    try:
        sampler = _MemorySampler(graph_processes.pids())
        replay = _ReplayNode(camera_msgtype, topics)
        _wait_until_ready(replay, graph_processes, graph, frames[0].rawdata, startup_timeout)
        published: dict[int, float] = {}
        resent = 0
        start = time.monotonic()
        required = REQUIRED_TOPICS
        print(f"[replay] {graph}: replaying {len(frames)} frames ({mode})", flush=True)
        if mode == "lockstep":
            for frame in frames:
                # Should the frame be lost on the wire (best-effort QoS), lockstep resends it
                # (same stamp) every RESEND_S; latency counts from the first send either way.
                deadline = time.monotonic() + frame_timeout
                published[frame.stamp_ns] = replay.publish_raw(frame.rawdata)
                while True:
                    wait = min(RESEND_S, deadline - time.monotonic())
                    if replay.wait_answered(frame.stamp_ns, required, wait, lambda: _check_alive(graph_processes)):
                        break
                    if time.monotonic() >= deadline:
                        warnings.append(f"frame {frame.stamp_ns} ns got no complete output within {frame_timeout} s")
                        break
                    replay.publish_raw(frame.rawdata)
                    resent += 1
        else:
            first = frames[0].bag_time_ns
            for frame in frames:
                target = start + (frame.bag_time_ns - first) / 1e9 / rate
                time.sleep(max(0.0, target - time.monotonic()))
                published[frame.stamp_ns] = replay.publish_raw(frame.rawdata)
                _check_alive(graph_processes)
            deadline = time.monotonic() + frame_timeout
            while time.monotonic() < deadline and not all(replay.answered(s, required) for s in published):
                _check_alive(graph_processes)
                time.sleep(0.1)
        wall = time.monotonic() - start
        time.sleep(0.5)  # stats of the last frame
        spread = sorted({round(i) for i in np.linspace(0, len(frames) - 1, overlays)}) if overlays else []
        overlay_paths = (_capture_overlays(replay, [frames[i] for i in spread], out_dir / "overlays", frame_timeout)
                         if spread else [])
    finally:  # whatever failed, no node process outlives the replay
        rss = sampler.stop() if sampler else {}
        if replay is not None:
            replay.shutdown()
        graph_processes.stop()
    report = _build_report(graph, bag_path, mode, rate, frames, published, replay, required, wall, rss, nodes,
                           parameters, baseline, truth_boxes, truth_masks, bag_classes, warnings)
    report["overlays"] = [str(p) for p in overlay_paths]
    report["frames"]["resent"] = resent
    if record:
        report["output_bag"] = str(_record(replay, out_dir / "outputs_bag"))
    _write_report(report, out_dir)
    return report


def _wait_until_ready(replay: _ReplayNode, graph_processes, graph: str, rawdata: bytes, timeout: float) -> None:
    """Wait for the graph to subscribe, then push warm-up frames until one is answered end to end."""
    consumers = len(GRAPHS[graph])
    deadline = time.monotonic() + timeout
    while replay.publisher.get_subscription_count() < consumers:
        _check_alive(graph_processes)
        if time.monotonic() > deadline:
            raise ReplayError(f"the {graph} graph did not subscribe to {replay.camera_topic} within {timeout} s")
        time.sleep(0.1)
    required = REQUIRED_TOPICS
    attempt = 0
    while True:
        stamp_sec = _WARMUP_SEC + attempt
        replay.publish_with_stamp(rawdata, stamp_sec)
        if replay.wait_answered(stamp_sec * 1_000_000_000, required, 5.0, lambda: _check_alive(graph_processes)):
            return
        attempt += 1
        if time.monotonic() > deadline:
            raise ReplayError(f"the {graph} graph never answered a warm-up frame within {timeout} s")


def _capture_overlays(replay: _ReplayNode, frames, directory: Path, timeout: float) -> list[Path]:
    """Subscribe to ``overlay`` only now (it is rendered only while subscribed, so the timed run
    above did not pay for it), replay a few frames and save the overlays as PNG."""
    from PIL import Image as PILImage
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from mtl_perception.image_msg_codec import image_to_array, to_rgb

    replay.subscribe("overlay")
    deadline = time.monotonic() + 30.0
    while replay.node.count_publishers(f"/{NAMESPACE}/overlay") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # let the publishers see the new subscription
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        replay.publish_raw(frame.rawdata)
        if not replay.wait_answered(frame.stamp_ns, ["overlay"], timeout, lambda: None):
            continue
        raw = next(item[3] for item in reversed(replay.received["overlay"].items) if item[2] == frame.stamp_ns)
        message = deserialize_message(raw, Image)
        path = directory / f"overlay_{index:02d}.png"
        PILImage.fromarray(to_rgb(image_to_array(message), message.encoding)).save(path)
        paths.append(path)
    return paths


def _record(replay: _ReplayNode, path: Path) -> Path:
    with BagWriter(path, force=True) as writer:
        for topic, record in replay.received.items():
            for _, wall_ns, _, raw in record.items:
                writer.write(f"/{NAMESPACE}/{topic}", _ROSBAG_TYPES[topic], wall_ns, raw)
    return path


def _latencies(published: dict[int, float], replay: _ReplayNode, required: list[str]) -> dict[int, float]:
    latencies = {}
    for stamp, t_pub in published.items():
        if replay.answered(stamp, required):
            latencies[stamp] = (max(replay.received[t].first_by_stamp[stamp] for t in required) - t_pub) * 1e3
    return latencies


def _node_stats(replay: _ReplayNode, stamps: set[int]) -> dict[str, dict]:
    from rclpy.serialization import deserialize_message

    from mtl_perception.msg import InferenceStats

    by_node: dict[str, list] = {}
    for _, _, stamp, raw in replay.received["stats"].items:
        message = deserialize_message(raw, InferenceStats)
        by_node.setdefault(message.node_name.rsplit("/", 1)[-1], []).append((stamp in stamps, message))
    result = {}
    for node, entries in by_node.items():
        measured = [m for in_run, m in entries if in_run]
        last = entries[-1][1]
        result[node] = {
            "inference_ms_p50": latency_summary([m.inference_ms for m in measured])["p50"],
            "total_ms_p50": latency_summary([m.total_ms for m in measured])["p50"],
            "preprocess_ms_p50": latency_summary([m.preprocess_ms for m in measured])["p50"],
            "postprocess_ms_p50": latency_summary([m.postprocess_ms for m in measured])["p50"],
            "frames_received": int(last.frames_received), "frames_processed": int(last.frames_processed),
            "frames_dropped": int(last.frames_dropped), "device": last.device, "precision": last.precision,
            "model_name": last.model_name,
            "gpu_allocated_mb_max": max((m.gpu_memory_allocated_mb for _, m in entries), default=0.0),
        }
    return result


def _accuracy(replay: _ReplayNode, stamps: set[int], class_names: dict, bag_classes: dict, truth_boxes: dict,
              truth_masks: dict, warnings: list[str]) -> dict:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.bags.typestore import detections_to_arrays
    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.ros.messages import detection_labels

    accuracy: dict = {}
    seg_names = class_names.get("segmentation")
    if seg_names and truth_masks:
        if bag_classes["segmentation"] and list(bag_classes["segmentation"]) != list(seg_names):
            warnings.append(f"segmentation classes differ: bag {list(bag_classes['segmentation'])} vs model {list(seg_names)}; mIoU skipped")
        else:
            matrix = ConfusionMatrix(len(seg_names))
            frames = 0
            for _, _, stamp, raw in replay.received["segmentation"].items:
                if stamp in stamps and stamp in truth_masks:
                    prediction = image_to_array(deserialize_message(raw, Image))
                    truth = truth_masks.pop(stamp)  # each frame counted once even if answered twice
                    if prediction.shape != truth.shape:
                        warnings.append(f"mask size {prediction.shape} != ground truth {truth.shape} at {stamp}")
                        continue
                    matrix.update(prediction, truth)
                    frames += 1
            result = matrix.compute()
            result["per_class_iou"] = {name: iou for name, iou in zip(seg_names, result["iou"])}
            result["frames"] = frames
            accuracy["segmentation"] = result
    det_names = class_names.get("detection")
    if det_names and truth_boxes:
        evaluator = DetectionEvaluator(list(det_names))
        unknown = {c for truth in truth_boxes.values() for c in truth.class_ids if c not in det_names}
        if unknown:
            warnings.append(f"ground-truth classes {sorted(unknown)} are not model classes; those boxes are ignored")
        seen = set()
        for _, _, stamp, raw in replay.received["detections"].items:
            if stamp not in stamps or stamp not in truth_boxes or stamp in seen:
                continue
            seen.add(stamp)
            boxes, class_ids, scores = detections_to_arrays(deserialize_message(raw, Detection2DArray))
            labels = detection_labels(class_ids, det_names)
            known = labels >= 0
            truth = truth_boxes[stamp]
            gt_labels = detection_labels(truth.class_ids, det_names)
            keep = gt_labels >= 0
            evaluator.add(str(stamp), boxes[known].astype(np.float32), scores[known].astype(np.float32), labels[known],
                          truth.boxes[keep], gt_labels[keep])
        result = evaluator.compute()
        result["frames"] = len(seen)
        accuracy["detection"] = result
    return accuracy


def _build_report(graph, bag_path, mode, rate, frames, published, replay, required, wall, rss, nodes, parameters,
                  baseline, truth_boxes, truth_masks, bag_classes, warnings) -> dict:
    stamps = set(published)
    latencies = _latencies(published, replay, required)
    node_stats = _node_stats(replay, stamps)
    for node, peak in rss.items():
        node_stats.setdefault(node, {})["rss_peak_mb"] = peak
    answered = len(latencies)
    sizes = {}
    for node in nodes:
        path = resolve_package_path(str(parameters[node]["checkpoint"]))
        sizes[node] = {"path": str(path), "size_mb": path.stat().st_size / 2**20}
    accuracy = _accuracy(replay, stamps, baseline["class_names"], bag_classes, dict(truth_boxes), dict(truth_masks), warnings)
    summary = latency_summary(list(latencies.values()))
    device = next((node_stats[n].get("device") for n in nodes if node_stats.get(n, {}).get("device")), baseline["device"])
    gpu = sum(node_stats.get(n, {}).get("gpu_allocated_mb_max", 0.0) for n in nodes)
    report = {
        "graph": graph,
        "bag": str(bag_path),
        "mode": mode,
        "rate": rate,
        "device": device,
        "complete": answered == len(frames),
        "warnings": warnings,
        "frames": {"published": len(frames), "answered": answered, "missing": len(frames) - answered},
        "latency_ms": summary,
        "latencies_ms": [latencies.get(f.stamp_ns, math.nan) for f in frames],
        "throughput_fps": answered / wall if wall > 0 else math.nan,
        "frames_dropped_by_nodes": sum(node_stats.get(n, {}).get("frames_dropped", 0) for n in nodes),
        "inference_ms_per_frame": sum(node_stats.get(n, {}).get("inference_ms_p50", math.nan) for n in nodes),
        "nodes": node_stats,
        "memory": {"inference_rss_mb": sum(rss.get(n, 0.0) for n in nodes), "rss_peak_mb": rss, "gpu_allocated_mb": gpu},
        "checkpoints": sizes,
        "size_mb": sum(s["size_mb"] for s in sizes.values()),
        "accuracy": accuracy,
        "overhead": {"predictor_p50_ms": baseline["predictor_p50_ms"], "end_to_end_p50_ms": summary["p50"],
                     "ratio": summary["p50"] / baseline["predictor_p50_ms"] if baseline["predictor_p50_ms"] else math.nan,
                     "frames": baseline["frames"]},
    }
    if not report["complete"]:
        warnings.append(f"{len(frames) - answered} of {len(frames)} frames were never answered: the report is incomplete")
    return report


def _write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [str(plot_latency_cdf({report["graph"]: report["latencies_ms"]}, out_dir / "latency_cdf.png"))]
    iou = per_class_from({report["graph"]: report}, "segmentation", "per_class_iou")
    if iou:
        plots.append(str(plot_per_class(iou, "IoU per class", out_dir / "per_class_iou.png")))
    ap = per_class_from({report["graph"]: report}, "detection", "per_class_ap_voc")
    if ap:
        plots.append(str(plot_per_class(ap, "AP50 per class", out_dir / "per_class_ap.png")))
    report["plots"] = plots
    write_json(out_dir / "report.json", report)
    write_text_atomic(out_dir / "report.md", replay_markdown(report))


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="rosbag2 folder or .mcap/.db3 file (make-bag output)")
    parser.add_argument("--camera-topic", help="camera topic in the bag (default: the bag's)")
    parser.add_argument("--mode", choices=("lockstep", "rate"), default="lockstep",
                        help="lockstep: each frame waits for its outputs; rate: recorded rate x --rate")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="parameter YAML (same as the launch files)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--frame-timeout", type=float, default=60.0, help="seconds a frame may wait for its outputs")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--overlays", type=int, default=3, help="overlay frames saved as PNG")
    parser.add_argument("--transport", choices=("localhost", "inherit"), default="localhost",
                        help="localhost: config/fastdds_localhost.xml for this process and the graph (unless "
                             "FASTDDS_DEFAULT_PROFILES_FILE is set); inherit: the environment as it is")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.ros.replay_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", choices=sorted(GRAPHS), required=True)
    parser.add_argument("--out", required=True, help="output folder (report.json, report.md, plots, overlays, outputs_bag)")
    parser.add_argument("--checkpoint", help="multitask graph: checkpoint")
    parser.add_argument("--segmentation-checkpoint", help="naive graph: segmentation checkpoint")
    parser.add_argument("--detection-checkpoint", help="naive graph: detection checkpoint")
    add_graph_arguments(parser)
    args = parser.parse_args(argv)
    arguments = {k: getattr(args, k) for k in ("checkpoint", "segmentation_checkpoint", "detection_checkpoint", "device")}
    return run_cli(lambda: run_replay(args.bag, args.graph, args.out, args.mode, args.rate, args.params, arguments,
                                      args.max_frames, args.frame_timeout, args.startup_timeout, args.overlays,
                                      args.camera_topic, localhost=args.transport == "localhost"),
                   lambda report: print(replay_markdown(report) + f"\nwrote {Path(args.out) / 'report.md'}"))


def run_cli(run, show) -> int:
    """Shared error handling of the replay CLIs: one clear line and the exit codes in the module doc."""
    try:
        report = run()
    except (BagError, ValueError, FileNotFoundError) as exc:  # bad bag or arguments
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ReplayError, CheckpointError, RuntimeError) as exc:  # graph can't start or died; CUDA asked but absent
        print(f"error: {exc}", file=sys.stderr)
        return 1
    show(report)
    return 0 if report["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
