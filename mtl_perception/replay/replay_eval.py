"""Replay a rosbag through a running node graph and measure it: the paper's Table II inside ROS.

    python -m mtl_perception.replay.replay_eval --bag BAG --graph multitask|naive --out DIR
        [--mode lockstep|rate] [--rate X] [--params config/mtl_perception.yaml]
        [--checkpoint P | --segmentation-checkpoint P --detection-checkpoint P] [--device cpu|cuda|cuda:N]
        [--backend auto|torch|onnxruntime] [--precision fp32|int8|...] [--engine-cache-dir DIR]
        [--budget shared|per-network] [--graph-cpus 1] [--cpu-threads 1]
        [--fixed-rates 10,30] [--fixed-seconds 6] [--peak | --no-peak] [--lockstep-frames 60]

The graph is started through the project CLI's code (:mod:`mtl_perception.graphs.graph`, the
same YAML as the launch files) under the namespace ``/replay``, within a compute budget
(:mod:`mtl_perception.graphs.budget`; the replay itself runs outside the graph's CPUs where
there is a core to spare). Runs, in order:

1. the accuracy pass: the bag's frames as recorded (raw CDR, stamps kept), in lockstep
   (each frame waits for its outputs) or at the recorded rate × ``--rate``; accuracy
   against the bag's ground truth, end-to-end latency (send → last output), drops; in
   lockstep, more passes over the same frames under fresh stamps until the latency has
   ``--lockstep-frames`` samples (a short bag's p50 moves too much from run to run); the bare
   Predictor baseline runs as many passes;
2. fixed-rate streams (``--fixed-rates``, fresh stamps): latency p50/p90/p99, jitter,
   frames with every output next to per-output counts, drops, CPU and RSS per process;
3. the peak-throughput search (``--peak``, :mod:`mtl_perception.replay.throughput`);
4. a few overlays saved as PNG (fresh stamps, after everything is measured).

Modules: :mod:`.replay_messages` (types, stamps), :mod:`.replay_node` (publisher,
subscriptions, output bag), :mod:`.process_sampler` (RSS/CPU from /proc),
:mod:`.predictor_baseline`, :mod:`.replay_runs` (the runs), :mod:`.throughput` (rate search),
:mod:`.replay_report` (scores, report, Markdown, Table II); this one orchestrates and is the CLI.

Frames a node drops because a newer one arrived (newest frame wins) are a result, and so
are frames it never received at rate (its keep-last-1 camera queue let DDS replace them
while it was busy, as best-effort camera QoS allows); both are counted and reported.

Exit codes: 0 complete; 1 the graph failed; 2 bad bag, checkpoint or arguments; 3
incomplete (frames were lost where they should not be: a frame unanswered in lockstep, where
each frame waits and is resent, or a node that received no frame of a run; the report says so).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from mtl_perception.bags.errors import BagError
from mtl_perception.bags.reader import BagReader
from mtl_perception.checkpoint import CheckpointError
from mtl_perception.graphs.budget import (ComputeBudget, add_budget_arguments, budget_from_args, check_device,
                                         format_cpu_list, pinned, plan_budget)
from mtl_perception.graphs.graph import (DEFAULT_PARAMS, ENGINE_ARGUMENTS, GRAPHS, add_engine_arguments, check_checkpoints,
                                         graph_environment, node_parameters, start_graph,
                                         use_localhost_transport)
from mtl_perception.predictor_settings import settings
from mtl_perception.replay.predictor_baseline import check_equal_work, run_baseline_process
from mtl_perception.replay.process_sampler import ProcessSampler
from mtl_perception.replay.replay_messages import REQUIRED_TOPICS
from mtl_perception.replay.replay_node import ReplayNode
from mtl_perception.replay.replay_report import build_report, combine_baselines, replay_markdown, write_report
from mtl_perception.replay.replay_runs import (ReplayError, capture_overlays, check_alive, fixed_rate_run, lockstep_passes,
                                            peak_throughput, run_bag_rate, run_lockstep, run_lockstep_passes,
                                            run_outcome, settle, wait_until_ready)

NAMESPACE = "replay"
DEFAULT_FIXED_RATES = (10.0, 30.0)
DEFAULT_LOCKSTEP_FRAMES = 60  # lockstep latency samples of the CLIs (more passes over a short bag)
__all__ = ["ReplayError", "run_replay", "run_cli", "main"]


def _inference_nodes(graph: str) -> list[str]:
    return [s.executable for s in GRAPHS[graph] if s.inference]


def run_replay(bag_path: str | Path, graph: str, out_dir: str | Path, mode: str = "lockstep", rate: float = 1.0,
               params_file: str = DEFAULT_PARAMS, arguments: dict | None = None, max_frames: int | None = None,
               frame_timeout: float = 60.0, startup_timeout: float = 180.0, overlays: int = 3,
               camera_topic: str | None = None, record: bool = True,
               localhost: bool = True, budget: ComputeBudget | None = None, fixed_rates=(), fixed_seconds: float = 6.0,
               peak: bool = False, peak_options: dict | None = None, lockstep_frames: int = 0) -> dict:
    """Replay ``bag_path`` through ``graph`` within ``budget``; writes the report into ``out_dir`` and returns it.

    Args:
        mode: accuracy pass in ``lockstep`` or at the bag's ``rate`` (× ``rate``).
        arguments: graph arguments (checkpoints, device, ...; see :func:`~mtl_perception.graphs.graph.node_overrides`).
        localhost: run the graph and this process on config/fastdds_localhost.xml (unless
            FASTDDS_DEFAULT_PROFILES_FILE is set).
        budget: default :func:`~mtl_perception.graphs.budget.plan_budget` ``shared``.
        fixed_rates: Hz of the fixed-rate streams, each ``fixed_seconds`` long.
        peak: search the peak throughput; ``peak_options`` go to
            :func:`~mtl_perception.replay.replay_runs.peak_throughput` (trial_seconds, min_frames, steps).
        lockstep_frames: in lockstep, repeat the frames (fresh stamps) until the latency, the
            stages and the bare Predictor have at least this many samples (0: one pass).

    Raises:
        BagError: the bag is missing, empty, corrupt or lacks the camera topic.
        ValueError, FileNotFoundError: bad arguments or checkpoints.
        ReplayError: the graph failed to start or died.
    """
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {sorted(GRAPHS)}")
    if mode not in ("lockstep", "rate"):
        raise ValueError(f"mode must be lockstep or rate, got {mode!r}")
    if rate <= 0 or any(r <= 0 for r in fixed_rates):
        raise ValueError("rates must be positive")
    if lockstep_frames < 0:
        raise ValueError(f"lockstep_frames must be >= 0, got {lockstep_frames}")
    out_dir = Path(out_dir)
    arguments = dict(arguments or {})
    budget = budget or plan_budget("shared", arguments.get("device"))
    if budget.device:  # the budget owns the device (cuda:N becomes cuda + CUDA_VISIBLE_DEVICES=N)
        arguments.pop("device", None)
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
    compressed = camera_msgtype.endswith("CompressedImage")
    if compressed:
        arguments["input_transport"] = "compressed"
    arguments = {**budget.node_arguments(), **{k: v for k, v in arguments.items() if v is not None}}
    parameters = node_parameters(graph, params_file, arguments)
    check_checkpoints(graph, parameters)
    nodes = _inference_nodes(graph)
    print(f"[replay] {graph}: budget {budget.describe()}", flush=True)
    if budget.gpu_index is not None:  # the graph sees GPU N as its only device; this process picks it
        import torch

        torch.cuda.set_device(budget.gpu_index)
    topics = list(REQUIRED_TOPICS)
    passes = lockstep_passes(len(frames), lockstep_frames) if mode == "lockstep" else 1
    spec = {"passes": passes, "parameters": {n: parameters[n] for n in nodes}, "nodes": nodes, "bag": str(bag_path),
            "camera_topic": camera_topic, "max_frames": max_frames, "color": "segmentation/color" in topics,
            "overlay": "overlay" in topics, "max_input_pixels": parameters[nodes[0]].get("max_input_pixels")}
    baseline_env = budget.environment(graph_environment())

    def bare_predictor(when: str) -> dict:
        cpus = format_cpu_list(budget.graph_cpus) if budget.graph_cpus else "all"
        print(f"[replay] {graph}: the bare Predictor on the {len(frames)} frames x {passes} {when} the graph (fresh process, "
              f"CPU {cpus})", flush=True)
        return run_baseline_process(spec, out_dir / "baseline", when, budget.graph_cpus, baseline_env)

    baselines = {"before": bare_predictor("before")}
    warnings: list[str] = []
    load_start = os.getloadavg()[0]
    graph_processes = start_graph(graph, params_file, NAMESPACE, f"/{NAMESPACE}/camera", arguments,
                                  log_dir=out_dir / "logs", budget=budget)
    alive = lambda: check_alive(graph_processes)  # noqa: E731
    sampler = replay = None
    results: dict = {}
    try:
        with pinned(budget.replay_cpus):  # the replay's threads (DDS, spin, sampler) inherit it
            sampler = ProcessSampler(graph_processes.pids())
            replay = ReplayNode(NAMESPACE, camera_msgtype, topics + ["stats"])
            messages = [replay.camera_message(f.rawdata) for f in frames]
            # overlay_node listens to raw images only; a compressed stream has just the inference nodes
            subscribers = len(nodes) if compressed else len(GRAPHS[graph])
            wait_until_ready(replay, alive, graph, messages[0], subscribers, topics, startup_timeout)
            check_equal_work({n: replay.parameter_values(n, list(settings(parameters[n]))) for n in nodes},
                             spec["parameters"])
            baseline = baselines["before"]
            results = _measure(replay, graph, nodes, frames, messages, topics, mode, rate, frame_timeout, sampler,
                               fixed_rates, fixed_seconds, peak, peak_options or {}, baseline, alive, warnings, passes)
            results["processes"] = sampler.placement()
            spread = sorted({round(i) for i in np.linspace(0, len(frames) - 1, overlays)}) if overlays else []
            replay.keep_raw = True
            results["overlays"] = [str(p) for p in capture_overlays(replay, NAMESPACE, [messages[i] for i in spread],
                                                                     out_dir / "overlays", frame_timeout)] if spread else []
    finally:  # whatever failed, no node process outlives the replay
        rss = sampler.stop() if sampler else {}
        if replay is not None:
            replay.shutdown()
        graph_processes.stop()
    baselines["after"] = bare_predictor("after")
    baseline = combine_baselines(baselines)
    report = build_report(graph, bag_path, mode, rate, budget, results, replay, rss, nodes, parameters, baseline,
                          truth_boxes, truth_masks, bag_classes, warnings)
    report["machine"] = {"cpus": os.cpu_count(), "loadavg_1min": [load_start, os.getloadavg()[0]]}
    if record:
        report["output_bag"] = str(replay.record(out_dir / "outputs_bag"))
    write_report(report, out_dir)
    return report


def _measure(replay: ReplayNode, graph, nodes, frames, messages, topics, mode, rate, frame_timeout, sampler,
             fixed_rates, fixed_seconds, peak, peak_options, baseline, alive, warnings, passes: int = 1) -> dict:
    """The measuring runs (see the module doc); returns their figures."""
    print(f"[replay] {graph}: replaying {len(frames)} frames ({mode})", flush=True)
    before = replay.counter_snapshot()
    if mode == "lockstep":
        published, resent = run_lockstep(replay, frames, topics, frame_timeout, alive, warnings)
    else:
        published, resent = run_bag_rate(replay, frames, rate, alive), 0
        settle(replay, published, nodes, before, 3.0, frame_timeout, alive)
    main_run = run_outcome(replay, published, topics, nodes, before, replay.counter_snapshot())
    main_run["resent"] = resent
    timed, pooled = main_run, published
    if passes > 1:  # more latency samples of the same frames; the accuracy pass stays as it was
        print(f"[replay] {graph}: {passes - 1} more lockstep passes for the latency", flush=True)
        more, _ = run_lockstep_passes(replay, frames, passes - 1, topics, frame_timeout, alive, warnings)
        pooled = {**published, **more}
        timed = run_outcome(replay, pooled, topics, nodes, before, replay.counter_snapshot())
    timing = {"passes": passes, "published": pooled, "latency_ms": timed["latency_ms"],
              "latencies_ms": timed["latencies_ms"]}
    estimate = main_run["latency_ms"]["p50"]
    if not np.isfinite(estimate):
        estimate = baseline["predictor_p50_ms"]
    quiet_s = max(1.0, 3e-3 * estimate)
    replay.keep_raw = False  # only the accuracy pass is scored and recorded in full
    fixed = []
    for rate_hz in fixed_rates:
        print(f"[replay] {graph}: {rate_hz:g} Hz for {fixed_seconds:g} s", flush=True)
        fixed.append(fixed_rate_run(replay, messages, rate_hz, fixed_seconds, topics, nodes, sampler, quiet_s, alive))
    search = None
    if peak:
        print(f"[replay] {graph}: searching the peak throughput", flush=True)
        search = peak_throughput(replay, messages, topics, nodes, 1e3 / estimate, quiet_s, alive, **peak_options).as_dict()
    return {"main": main_run, "published": published, "lockstep": timing, "fixed_rate": fixed,
            "peak_throughput": search}


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r} (e.g. 10,30)") from None
    if any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def add_graph_arguments(parser: argparse.ArgumentParser, peak_default: bool = False) -> None:
    """The options replay_eval, compare and demo share."""
    parser.add_argument("--bag", required=True, help="rosbag2 folder or .mcap/.db3 file (make-bag output)")
    parser.add_argument("--camera-topic", help="camera topic in the bag (default: the bag's)")
    parser.add_argument("--mode", choices=("lockstep", "rate"), default="lockstep",
                        help="accuracy pass. lockstep: each frame waits for its outputs; rate: recorded rate x --rate")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="parameter YAML (same as the launch files)")
    parser.add_argument("--device", type=check_device, help="auto | cpu | cuda | cuda:N (default: the YAML's)")
    add_engine_arguments(parser)
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--frame-timeout", type=float, default=60.0, help="seconds a frame may wait for its outputs")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--overlays", type=int, default=3, help="overlay frames saved as PNG")
    parser.add_argument("--transport", choices=("localhost", "inherit"), default="localhost",
                        help="localhost: config/fastdds_localhost.xml for this process and the graph (unless "
                             "FASTDDS_DEFAULT_PROFILES_FILE is set); inherit: the environment as it is")
    add_perf_arguments(parser, peak_default)
    add_budget_arguments(parser)


def add_perf_arguments(parser: argparse.ArgumentParser, peak_default: bool) -> None:
    parser.add_argument("--fixed-rates", type=_rates, default=DEFAULT_FIXED_RATES,
                        help="Hz of the fixed-rate runs, comma-separated; '' = none (default 10,30)")
    parser.add_argument("--fixed-seconds", type=float, default=6.0, help="length of each fixed-rate run")
    parser.add_argument("--peak", action=argparse.BooleanOptionalAction, default=peak_default,
                        help="search the peak throughput (binary search of the publish rate)")
    parser.add_argument("--lockstep-frames", type=int, default=DEFAULT_LOCKSTEP_FRAMES,
                        help="lockstep: repeat the bag's frames (fresh stamps) until the latency has this many "
                             f"samples; 0 = one pass (default {DEFAULT_LOCKSTEP_FRAMES})")


def replay_options(args) -> dict:
    """run_replay keyword arguments from parsed :func:`add_graph_arguments` options."""
    return {"max_frames": args.max_frames, "frame_timeout": args.frame_timeout, "startup_timeout": args.startup_timeout,
            "overlays": args.overlays, "camera_topic": args.camera_topic, "localhost": args.transport == "localhost",
            "fixed_rates": args.fixed_rates, "fixed_seconds": args.fixed_seconds, "peak": args.peak,
            "lockstep_frames": args.lockstep_frames}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.replay.replay_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", choices=sorted(GRAPHS), required=True)
    parser.add_argument("--out", required=True, help="output folder (report.json, report.md, plots, overlays, outputs_bag)")
    parser.add_argument("--checkpoint", help="multitask graph: checkpoint")
    parser.add_argument("--segmentation-checkpoint", help="naive graph: segmentation checkpoint")
    parser.add_argument("--detection-checkpoint", help="naive graph: detection checkpoint")
    add_graph_arguments(parser)
    args = parser.parse_args(argv)
    arguments = {k: getattr(args, k) for k in ("checkpoint", "segmentation_checkpoint", "detection_checkpoint", "device",
                                               *ENGINE_ARGUMENTS)}
    return run_cli(lambda: run_replay(args.bag, args.graph, args.out, args.mode, args.rate, args.params, arguments,
                                      budget=budget_from_args(args), **replay_options(args)),
                   lambda report: print(replay_markdown(report) + f"\nwrote {Path(args.out) / 'report.md'}"))


def run_cli(run, show) -> int:
    """Shared error handling of the replay CLIs: one clear line and the exit codes in the module doc."""
    try:
        report = run()
    except (BagError, CheckpointError, ValueError, FileNotFoundError) as exc:  # bad bag, checkpoint or arguments
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ReplayError, RuntimeError) as exc:  # graph can't start or died; CUDA asked but absent
        print(f"error: {exc}", file=sys.stderr)
        return 1
    show(report)
    return 0 if report["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
