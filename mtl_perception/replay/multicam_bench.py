"""One multicam_node vs one multitask_node per camera, at the same compute budget.

    python -m mtl_perception.replay.multicam_bench --out multicam_output [--cameras 4]
        [--bag demo_output/demo_bag] [--checkpoint checkpoints/demo_multitask.pt] [--device cpu]
        [--max-batch 0 [4 ...]] [--rate-per-camera 1] [--budget shared] [--graph-cpus 1] [--cpu-threads 1]
        [--backend auto|torch|onnxruntime] [--precision fp32|int8|...] [--engine-cache-dir DIR]

Sides, started one after the other with the same budget (:mod:`mtl_perception.graphs.budget`: every
node process on the same CPU set with the same torch threads, or on one GPU): ``batched`` (the
``multitask_multicam`` graph, once per ``--max-batch`` value) and ``per-camera`` (N ``multitask``
graphs, namespaces ``<camera>``). Frames: see :func:`load_frames` (a ``make-bag --merge-cameras``
bag, or one camera's bag shared). Per side:

* memory: peak RSS of every node process (summed over the N nodes of ``per-camera``);
* per-camera latency (publish → the frame's stats) at ``--rate-per-camera`` for every camera;
* aggregate peak throughput: :func:`~mtl_perception.replay.throughput.search_peak_rate` over the
  aggregate rate (the cameras in turn); a rate passes when <= 5 % of frames go unanswered and
  the answers keep up with >= 90 % of the rate.

Writes ``report.json``, ``report.md`` and ``multicam.png`` into ``--out``. Exit codes: 0 written;
1 a node failed while running; 2 bad arguments, bag or checkpoint.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from mtl_perception.atomic import atomic_output, write_json_atomic, write_text_atomic
from mtl_perception.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from mtl_perception.graphs.budget import add_budget_arguments, budget_from_args, check_device, pinned
from mtl_perception.engines.backends import resolve_backend, session_providers
from mtl_perception.graphs.graph import DEFAULT_PARAMS, ENGINE_ARGUMENTS, add_engine_arguments, node_parameters, start_graph
from mtl_perception.replay.multicam_replay import MulticamReplay, latency_summary
from mtl_perception.ros.paths import resolve_package_path
from mtl_perception.replay.process_sampler import ProcessSampler
from mtl_perception.replay.throughput import search_peak_rate

# Targets of the multi-camera issue (4 cameras, shared budget, vs 4 single-camera nodes).
MEMORY_TARGET = 3.0
THROUGHPUT_TARGET = 1.2
TRIAL_SECONDS = 4.0


def load_frames(bag: Path, cameras: int) -> dict[str, list]:
    """Camera name (``cam<i>``) -> sensor_msgs Image messages (decoded, re-encoded rgb8) it replays.

    A bag of ``make-bag --merge-cameras`` gives camera ``i`` its ``i``-th camera topic (and must
    have ``cameras`` of them); a single-camera bag gives every camera its frames, camera ``i``
    starting at frame ``i`` so that the cameras show different frames at any moment.
    """
    from mtl_perception.bags.multicam_bag import camera_topics
    from mtl_perception.bags.reader import open_bag
    from mtl_perception.ros.image_msg_builders import array_to_image_msg

    def read(topic: str | None) -> list:
        with open_bag(bag, camera_topic=topic) as reader:
            return [array_to_image_msg(frame.image, "rgb8") for frame in reader.frames()]

    topics = camera_topics(bag)
    if topics:
        if len(topics) != cameras:
            raise ValueError(f"{bag} has {len(topics)} camera topics {topics}; --cameras is {cameras}")
        return {f"cam{i}": read(topic) for i, topic in enumerate(topics)}
    frames = read(None)
    return {f"cam{i}": frames[i % len(frames):] + frames[:i % len(frames)] for i in range(cameras)}


class GraphFailed(RuntimeError):
    pass


def _params_with(params_file: str, max_batch: int, directory: str) -> Path:
    """A copy of the parameter YAML with multicam_node's ``max_batch`` set."""
    import yaml

    data = yaml.safe_load(resolve_package_path(params_file).read_text()) or {}
    section = data.setdefault("/**/multicam_node", {}).setdefault("ros__parameters", {})
    section["max_batch"] = int(max_batch)
    path = Path(directory) / f"params_max_batch_{max_batch}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure_side(name: str, graphs: list, replay: MulticamReplay, args) -> dict:
    """Warm up, time the fixed-rate run and the peak search of one side; its graphs stay running."""
    pids = {f"{key}/{node}": pid for key, graph in graphs for node, pid in graph.pids().items()}
    sampler = ProcessSampler(pids)

    def alive() -> None:
        for key, graph in graphs:
            if graph.exited():
                raise GraphFailed(f"{name}: {key} exited {graph.exited()}")

    cameras = replay.cameras
    try:
        if not replay.warm_up():
            alive()
            raise GraphFailed(f"{name}: a camera got no answer within the warm-up")
        rate = args.rate_per_camera * len(cameras)
        fixed, latencies = replay.run_rate(rate, max(3 * len(cameras), round(rate * TRIAL_SECONDS)))
        alive()

        def trial(rate_hz: float):
            result, _ = replay.run_rate(rate_hz, max(3 * len(cameras), round(rate_hz * TRIAL_SECONDS)))
            alive()
            print(f"[multicam_bench] {name}: {rate_hz:.2f} Hz -> {result.answered}/{result.published} answered, "
                  f"{result.output_fps:.2f} fps ({'pass' if result.passed else 'fail'})", flush=True)
            return result

        cpu_start = sampler.cpu_seconds()
        peak = search_peak_rate(trial, args.low_hz, args.high_hz, steps=args.steps)
        cpu_end = sampler.cpu_seconds()
    finally:
        peaks = sampler.stop()
    cpu_s = sum(cpu_end[1].values()) - sum(cpu_start[1].values())
    answered = sum(t["answered"] for t in peak.as_dict()["trials"])
    return {"side": name, "processes": len(pids), "rss_mb": sum(peaks.values()), "rss_mb_per_process": peaks,
            "fixed_rate": {"rate_hz": rate, **fixed.as_dict(), "latency": latency_summary(latencies)},
            "peak": peak.as_dict(), "search_cpu_percent": 100.0 * cpu_s / (cpu_end[0] - cpu_start[0]),
            "frames_per_cpu_second": answered / cpu_s if cpu_s > 0 else math.nan}


def run_side(name: str, specs: list[tuple[str, dict]], namespace: str, frames: dict[str, list], budget, args,
             log_dir: Path) -> dict:
    """Start the side's graphs (``specs``: (key, start_graph keyword arguments)), measure, stop."""
    graphs = []
    replay = None
    try:
        for key, kwargs in specs:
            graphs.append((key, start_graph(log_dir=log_dir / name / key, budget=budget, **kwargs)))
        with pinned(budget.replay_cpus):
            replay = MulticamReplay(namespace, frames)
            return measure_side(name, graphs, replay, args)
    finally:
        if replay is not None:
            replay.shutdown()
        for _, graph in graphs:
            graph.stop()


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and math.isfinite(denominator) and denominator > 0 else math.nan


def engine_line(params_file: str, arguments: dict) -> str:
    """The engine, execution provider and precision both sides' nodes run (the YAML and the
    arguments, through the nodes' own backend policy)."""
    params = node_parameters("multitask", params_file, arguments)["multitask_node"]
    device_type = "cuda" if str(params.get("device", "cpu")).startswith("cuda") else "cpu"
    precision = str(params.get("precision", "fp32"))
    engine = resolve_backend(str(params.get("backend", "auto")), device_type, precision)
    provider = session_providers(device_type)[0] if engine == "onnxruntime" else device_type
    return f"{engine} {provider} {precision}"


def report_markdown(report: dict) -> str:
    lines = [f"# {report['cameras_count']} cameras: one batched node vs one node per camera", "",
             f"Budget: {report['budget']['line']}.", f"Machine: {report['machine']}.",
             f"Engine (every node): {report.get('engine', 'unknown')}.",
             f"Frames: {report['bag']} (per camera: {', '.join(f'{c} {n}' for c, n in report['frames'].items())}), "
             f"checkpoint {report['checkpoint']}.", "",
             "| side | processes | RSS (MB) | aggregate peak (fps) | CPU used in the search (% of one core) "
             "| frames per CPU-second | latency p50 per camera (ms) |",
             "|---|---|---|---|---|---|---|"]
    for side in report["sides"]:
        latency = ", ".join(f"{c} {v['p50_ms']:.0f}" for c, v in side["fixed_rate"]["latency"].items())
        peak = side["peak"]
        peak_text = f"{peak['peak_fps']:.2f}" + (" (at the search's upper bound)" if peak["at_bound"] else "")
        lines.append(f"| {side['side']} | {side['processes']} | {side['rss_mb']:.0f} | {peak_text} | "
                     f"{side['search_cpu_percent']:.0f} | {side['frames_per_cpu_second']:.1f} | {latency} |")
    lines += ["", f"Latency at {report['rate_per_camera_hz']:g} Hz per camera; peak: the highest aggregate rate with "
                  "<= 5 % of frames unanswered and answers >= 90 % of the rate. Frames per CPU-second: frames answered "
                  "during the peak search / CPU time of the side's node processes meanwhile (the work per frame, "
                  "whatever share of a contended CPU the side got: under other load N processes get up to N "
                  "scheduler shares where one process gets one).", ""]
    for name, versus in report["versus_per_camera"].items():
        lines.append(f"- {name}: memory {versus['memory_x']:.2f}x lower (target >= {MEMORY_TARGET:g}x: "
                     f"{'PASS' if versus['memory_x'] >= MEMORY_TARGET else 'FAIL'}), aggregate peak throughput "
                     f"{versus['throughput_x']:.2f}x (target >= {THROUGHPUT_TARGET:g}x: "
                     f"{'PASS' if versus['throughput_x'] >= THROUGHPUT_TARGET else 'FAIL'}), frames per CPU-second "
                     f"{versus['cpu_efficiency_x']:.2f}x")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sides = report["sides"]
    names = [s["side"] for s in sides]
    colors = [f"C{i}" for i in range(len(sides))]
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    axes[0].bar(names, [s["rss_mb"] for s in sides], color=colors)
    axes[0].set_ylabel("peak RSS of the node processes (MB)")
    axes[1].bar(names, [s["peak"]["peak_fps"] for s in sides], color=colors)
    axes[1].set_ylabel("aggregate peak throughput (frames/s)")
    axes[3].bar(names, [s["frames_per_cpu_second"] for s in sides], color=colors)
    axes[3].set_ylabel("frames per CPU-second (peak search)")
    cameras = list(sides[0]["fixed_rate"]["latency"])
    width = 0.8 / len(sides)
    tallest = 0.0
    for index, side in enumerate(sides):
        values = [side["fixed_rate"]["latency"][c]["p50_ms"] for c in cameras]
        tallest = max([tallest, *values])
        axes[2].bar(np.arange(len(cameras)) + index * width, values, width, label=side["side"], color=colors[index])
    # Headroom above the bars for the legend, so it covers none of them.
    axes[2].set_ylim(0, tallest * (1.2 + 0.12 * len(sides)) or 1.0)
    axes[2].set_xticks(np.arange(len(cameras)) + width * (len(sides) - 1) / 2, cameras)
    axes[2].set_ylabel(f"latency p50 at {report['rate_per_camera_hz']:g} Hz/camera (ms)")
    axes[2].legend(fontsize=8, loc="upper center")
    for axis in (axes[0], axes[1], axes[3]):
        axis.tick_params(axis="x", labelsize=8, labelrotation=15)
    figure.suptitle(f"{report['cameras_count']} cameras, {report['budget']['line']}\n{report['machine']}", fontsize=9)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.replay.multicam_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--bag", type=Path, default=Path("demo_output/demo_bag"), help="camera frames (make-bag)")
    parser.add_argument("--checkpoint", default="checkpoints/demo_multitask.pt")
    parser.add_argument("--params", default=DEFAULT_PARAMS)
    parser.add_argument("--device", type=check_device, default="cpu")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[0], help="batched side(s): multicam_node max_batch")
    parser.add_argument("--rate-per-camera", type=float, default=1.0, help="fixed-rate latency run (Hz per camera)")
    parser.add_argument("--low-hz", type=float, default=1.0, help="peak search: lowest aggregate rate")
    parser.add_argument("--high-hz", type=float, default=32.0, help="peak search: highest aggregate rate")
    parser.add_argument("--steps", type=int, default=4, help="peak search bisections")
    parser.add_argument("--machine", default="", help="machine description for the report (default: CPU count)")
    add_engine_arguments(parser)
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.cameras < 1:
            raise ValueError("--cameras must be >= 1")
        if not resolve_package_path(args.checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {args.checkpoint} is not a file")
        budget = budget_from_args(args)
        frames = load_frames(args.bag, args.cameras)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"multicam_bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # BagError and friends: a bag that cannot be read
        print(f"multicam_bench: error: {args.bag}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cameras = list(frames)
    checkpoint = str(resolve_package_path(args.checkpoint))
    node_arguments = {"checkpoint": checkpoint, "device": args.device,
                      **{name: getattr(args, name) for name in ENGINE_ARGUMENTS if getattr(args, name)}}
    try:
        engine = engine_line(args.params, node_arguments)
    except ValueError as exc:
        print(f"multicam_bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    load_start = os.getloadavg()[0]
    sides = []
    try:
        with tempfile.TemporaryDirectory(prefix="mtl_multicam_") as scratch:
            for max_batch in args.max_batch:
                params = _params_with(args.params, max_batch, scratch)
                name = f"batched (max_batch {max_batch or 'auto'})"
                specs = [("multicam", dict(graph="multitask_multicam", params_file=params, namespace="mcb",
                                           arguments={**node_arguments, "cameras": cameras}))]
                sides.append(run_side(name, specs, "mcb", frames, budget, args, args.out / "logs"))
            specs = [(camera, dict(graph="multitask", params_file=args.params, namespace=f"mcn/{camera}",
                                   camera_topic=f"/mcn/{camera}/image", arguments=node_arguments)) for camera in cameras]
            sides.append(run_side("per-camera", specs, "mcn", frames, budget, args, args.out / "logs"))
    except GraphFailed as exc:
        print(f"multicam_bench: {exc}; logs in {args.out / 'logs'}", file=sys.stderr)
        return EXIT_FAILED
    machine = args.machine or f"{os.cpu_count()} CPUs"
    machine += f"; 1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    naive = sides[-1]
    report = {"cameras_count": args.cameras, "cameras": cameras, "bag": str(args.bag),
              "frames": {camera: len(messages) for camera, messages in frames.items()},
              "checkpoint": args.checkpoint, "device": args.device, "engine": engine, "budget": budget.as_dict(),
              "machine": machine,
              "rate_per_camera_hz": args.rate_per_camera, "sides": sides,
              "versus_per_camera": {side["side"]: {"memory_x": ratio(naive["rss_mb"], side["rss_mb"]),
                                                    "throughput_x": ratio(side["peak"]["peak_fps"], naive["peak"]["peak_fps"]),
                                                    "cpu_efficiency_x": ratio(side["frames_per_cpu_second"],
                                                                              naive["frames_per_cpu_second"])}
                                    for side in sides[:-1]}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "report.json", report)
    write_text_atomic(args.out / "report.md", report_markdown(report))
    plot(report, args.out / "multicam.png")
    print(report_markdown(report))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
