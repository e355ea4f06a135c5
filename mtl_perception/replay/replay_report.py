"""Scores and reports of a replay: accuracy against the bag's ground truth, node statistics,
the report dict, its Markdown, and the side-by-side comparison (Table II) of two reports."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mtl_perception.atomic import write_text_atomic
from mtl_perception.evaluation.report import (latency_summary, per_class_from, plot_latency_cdf, plot_per_class, ratio,
                                              write_json)
from mtl_perception.metrics import ConfusionMatrix, DetectionEvaluator
from mtl_perception.graphs.budget import ComputeBudget, format_cpu_list
from mtl_perception.ros.paths import resolve_package_path
from mtl_perception.replay.throughput import events_per_second


STEADY_TOLERANCE = 0.10  # the two bare-Predictor measurements further apart than this: the machine was not steady
STAGE_SUM_TOLERANCE = 0.05  # the stages must add up to the end-to-end time within this
OVERHEAD_TARGET = 1.10  # node overhead target: lockstep end to end <= 1.10x the bare Predictor of the same engine
# Stages of one frame from the replay's send to the node's last answer (InferenceStats fields; transport
# from the node's CLOCK_MONOTONIC stamps against the replay's send and receive times on this machine).
FRAME_STAGES = ("transport_in", "queue", "decode", "preprocess", "network", "postprocess", "publish", "transport_out")
STAGE_LABELS = {"transport_in": "transport in (send → node callback)", "queue": "queue (pending slot → worker)",
                "decode": "decode", "preprocess": "preprocess (resize, letterbox)", "network": "network",
                "postprocess": "postprocess (mask, colour, boxes, NMS)", "publish": "message building and publish",
                "transport_out": "transport out (publish → replay)", "render": "overlay rendering"}


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def node_statistics(stats: list, stamps: set[int]) -> dict[str, dict]:
    """Per node, from its InferenceStats: timing p50s over ``stamps``, the latest counters, device, GPU memory."""
    from mtl_perception.replay.replay_messages import stamp_ns

    by_node: dict[str, list] = {}
    for _, message in stats:
        by_node.setdefault(message.node_name.rsplit("/", 1)[-1], []).append(message)
    result = {}
    for node, messages in by_node.items():
        measured = [m for m in messages if stamp_ns(m.header.stamp) in stamps]
        last = messages[-1]
        result[node] = {
            "inference_ms_p50": latency_summary([m.inference_ms for m in measured])["p50"],
            "total_ms_p50": latency_summary([m.total_ms for m in measured])["p50"],
            "preprocess_ms_p50": latency_summary([m.preprocess_ms for m in measured])["p50"],
            "postprocess_ms_p50": latency_summary([m.postprocess_ms for m in measured])["p50"],
            "non_network_ms_p50": latency_summary([m.total_ms - m.inference_ms for m in measured])["p50"],
            "frames_received": int(last.frames_received), "frames_processed": int(last.frames_processed),
            "frames_dropped": int(last.frames_dropped), "device": last.device, "precision": last.precision,
            "engine": last.engine, "execution_provider": last.execution_provider, "model_name": last.model_name,
            "gpu_allocated_mb_max": max((m.gpu_memory_allocated_mb for m in messages), default=0.0),
        }
    return result


def combine_baselines(baselines: dict[str, dict]) -> dict:
    """The bare-Predictor figure of the report: the mean of the p50s measured before the graph
    started and after it stopped, with both, and whether they agree within STEADY_TOLERANCE."""
    before, after = baselines["before"], baselines["after"]
    a, b = before["predictor_p50_ms"], after["predictor_p50_ms"]
    spread = abs(a - b) / min(a, b) if min(a, b) > 0 else math.nan
    stages = {stage: (latency_summary(before["stages_ms"][stage])["p50"] + latency_summary(after["stages_ms"][stage])["p50"]) / 2
              for stage in before["stages_ms"]}
    return {**before, "predictor_p50_ms": (a + b) / 2, "before_p50_ms": a, "after_p50_ms": b, "spread": spread,
            "steady": bool(spread <= STEADY_TOLERANCE), "stages_ms_p50": stages}


def overhead_summary(end_to_end_p50: float, baseline: dict) -> dict:
    """The node-overhead ratio (end to end ÷ bare Predictor) with its verdicts.

    ``valid`` is False for a ratio below 1.0: a ROS round trip cannot take less than the same
    work alone, so such a ratio is a measurement error, never a gain. ``target_met``: the ratio
    is valid and at most OVERHEAD_TARGET.
    """
    predictor = baseline["predictor_p50_ms"]
    value = end_to_end_p50 / predictor if predictor and math.isfinite(end_to_end_p50) else math.nan
    valid = bool(math.isfinite(value) and value >= 1.0)
    return {"predictor_p50_ms": predictor, "before_p50_ms": baseline.get("before_p50_ms", predictor),
            "after_p50_ms": baseline.get("after_p50_ms", predictor), "steady": baseline.get("steady", True),
            "spread": baseline.get("spread", 0.0), "end_to_end_p50_ms": end_to_end_p50, "ratio": value,
            "valid": valid, "target": OVERHEAD_TARGET, "target_met": bool(valid and value <= OVERHEAD_TARGET),
            "frames": baseline["frames"]}


def overhead_text(overhead: dict) -> str:
    """The ratio as a report prints it: a ratio below 1 as a measurement error with both figures."""
    if not math.isfinite(overhead.get("ratio", math.nan)):
        return "n/a"
    if not overhead["valid"]:
        return (f"MEASUREMENT ERROR: end to end {_fmt(overhead['end_to_end_p50_ms'])} ms < bare Predictor "
                f"{_fmt(overhead['predictor_p50_ms'])} ms (ratio {overhead['ratio']:.2f}x, not a gain)")
    verdict = "PASS" if overhead["target_met"] else "FAIL"
    return f"{overhead['ratio']:.2f}x ({verdict}: target ≤ {overhead['target']:.2f}x)"


def stage_breakdown(stats: list, published: dict[int, float], first_arrival: dict[str, dict[int, float]],
                    node_topics: dict[str, list[str]]) -> dict[str, dict]:
    """Per node, each frame's stages (ms) from send to the node's last answer, and their check.

    Args:
        stats: the replay's (receive time, InferenceStats) list.
        published: stamp → monotonic send time.
        first_arrival: topic → stamp → monotonic time of the first output.
        node_topics: node → the answer topics it publishes.

    Returns:
        node → ``frames``, ``p50`` and ``mean`` (stage → ms, FRAME_STAGES and ``end_to_end``),
        ``sum_of_means_ms``, ``gap`` ((end to end − sum) ÷ end to end, means) and
        ``adds_up`` (|gap| ≤ STAGE_SUM_TOLERANCE).
    """
    from mtl_perception.replay.replay_messages import stamp_ns

    result = {}
    for node, topics in node_topics.items():
        frames, seen = [], set()
        for _, m in stats:
            stamp = stamp_ns(m.header.stamp)
            if (m.node_name.rsplit("/", 1)[-1] != node or stamp not in published or stamp in seen or not m.receive_time_ns
                    or not all(stamp in first_arrival.get(t, {}) for t in topics)):
                continue
            seen.add(stamp)
            sent, answered = published[stamp] * 1e3, max(first_arrival[t][stamp] for t in topics) * 1e3
            frames.append({"transport_in": m.receive_time_ns / 1e6 - sent, "queue": m.queue_ms, "decode": m.decode_ms,
                           "preprocess": m.resize_ms, "network": m.inference_ms, "postprocess": m.outputs_ms,
                           "publish": m.publish_ms, "transport_out": answered - m.publish_time_ns / 1e6,
                           "end_to_end": answered - sent})
        if not frames:
            continue
        keys = (*FRAME_STAGES, "end_to_end")
        mean = {k: float(np.mean([f[k] for f in frames])) for k in keys}
        total = sum(mean[k] for k in FRAME_STAGES)
        gap = (mean["end_to_end"] - total) / mean["end_to_end"] if mean["end_to_end"] else math.nan
        result[node] = {"frames": len(frames), "mean": mean, "p50": {k: float(np.median([f[k] for f in frames])) for k in keys},
                        "sum_of_means_ms": total, "gap": gap, "adds_up": bool(abs(gap) <= STAGE_SUM_TOLERANCE)}
    return result


def engine_line(node_stats: dict, nodes: list[str], baseline: dict) -> str:
    """Which engine, execution provider and precision each inference node ran (from its
    InferenceStats; the bare Predictor's own where a node published none)."""
    parts = {}
    for node in nodes:
        stats = node_stats.get(node) or {}
        if stats.get("engine"):
            parts[node] = f"{stats['engine']} {stats['execution_provider']} {stats['precision']}"
        else:
            parts[node] = (baseline.get("engines") or {}).get(node, "unknown")
    if len(set(parts.values())) == 1:
        return next(iter(parts.values()))
    return "; ".join(f"{node}: {text}" for node, text in parts.items())


def accuracy(received: dict[str, list], stamps: set[int], class_names: dict, bag_classes: dict, truth_boxes: dict,
             truth_masks: dict, warnings: list[str]) -> dict:
    """mIoU and VOC/COCO mAP of the outputs whose stamps are in ``stamps`` (first answer per frame)."""
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.bags.typestore import detections_to_arrays
    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.ros.messages import detection_labels
    from mtl_perception.replay.replay_messages import deserialize

    result: dict = {}
    seg_names = class_names.get("segmentation")
    if seg_names and truth_masks:
        if bag_classes["segmentation"] and list(bag_classes["segmentation"]) != list(seg_names):
            warnings.append(f"segmentation classes differ: bag {list(bag_classes['segmentation'])} vs model {list(seg_names)}; mIoU skipped")
        else:
            matrix = ConfusionMatrix(len(seg_names))
            seen = set()
            for arrival in received["segmentation"]:
                if arrival.stamp in stamps and arrival.stamp in truth_masks and arrival.stamp not in seen and arrival.raw:
                    seen.add(arrival.stamp)
                    prediction = image_to_array(deserialize(arrival.raw, Image))
                    truth = truth_masks[arrival.stamp]
                    if prediction.shape != truth.shape:
                        warnings.append(f"mask size {prediction.shape} != ground truth {truth.shape} at {arrival.stamp}")
                        continue
                    matrix.update(prediction, truth)
            seg = matrix.compute()
            seg["per_class_iou"] = {name: iou for name, iou in zip(seg_names, seg["iou"])}
            seg["frames"] = len(seen)
            result["segmentation"] = seg
    det_names = class_names.get("detection")
    if det_names and truth_boxes:
        evaluator = DetectionEvaluator(list(det_names))
        unknown = {c for truth in truth_boxes.values() for c in truth.class_ids if c not in det_names}
        if unknown:
            warnings.append(f"ground-truth classes {sorted(unknown)} are not model classes; those boxes are ignored")
        seen = set()
        for arrival in received["detections"]:
            if arrival.stamp not in stamps or arrival.stamp not in truth_boxes or arrival.stamp in seen or not arrival.raw:
                continue
            seen.add(arrival.stamp)
            boxes, class_ids, scores = detections_to_arrays(deserialize(arrival.raw, Detection2DArray))
            labels = detection_labels(class_ids, det_names)
            known = labels >= 0
            truth = truth_boxes[arrival.stamp]
            gt_labels = detection_labels(truth.class_ids, det_names)
            keep = gt_labels >= 0
            evaluator.add(str(arrival.stamp), boxes[known].astype(np.float32), scores[known].astype(np.float32), labels[known],
                          truth.boxes[keep], gt_labels[keep])
        det = evaluator.compute()
        det["frames"] = len(seen)
        result["detection"] = det
    return result


def build_report(graph, bag_path, mode, rate, budget, results, replay, rss, nodes, parameters, baseline, truth_boxes,
                 truth_masks, bag_classes, warnings) -> dict:
    """The replay report of one graph from the runs' figures (:func:`~mtl_perception.replay.replay_eval.run_replay`)."""
    main_run, published = results["main"], results["published"]
    stamps = set(published)
    # latency, stages and node timings from every lockstep pass; accuracy from the first
    timing = results["lockstep"]
    node_stats = node_statistics(replay.stats, set(timing["published"]))
    sizes = {}
    for node in nodes:
        path = resolve_package_path(str(parameters[node]["checkpoint"]))
        sizes[node] = {"path": str(path), "size_mb": path.stat().st_size / 2**20}
    scores = accuracy(replay.received, stamps, baseline["class_names"], bag_classes, truth_boxes, truth_masks, warnings)
    summary = timing["latency_ms"]
    device = next((node_stats[n].get("device") for n in nodes if node_stats.get(n, {}).get("device")), baseline["device"])
    gpu = sum(node_stats.get(n, {}).get("gpu_allocated_mb_max", 0.0) for n in nodes)
    answered_times = sorted(published[s] + v / 1e3 for s, v in main_run["latencies_ms"].items())
    unanswered = main_run["published"] - main_run["answered"] if mode == "lockstep" else 0
    if unanswered:
        warnings.append(f"{unanswered} of {main_run['published']} frames were never answered in lockstep: the report is incomplete")
    runs = [("the accuracy pass", main_run)] + [(f"the {r['rate_hz']:g} Hz run", r) for r in results["fixed_rate"]]
    silent = [(name, run["silent_nodes"]) for name, run in runs if run["silent_nodes"]]
    for name, nodes_without in silent:
        warnings.append(f"in {name} {', '.join(nodes_without)} received no frame at all: the report is incomplete")
    for name, run in runs:
        if run["not_received"] and not run["silent_nodes"]:
            warnings.append(f"in {name} a node never received {run['not_received']} of {run['published']} frames (its "
                            "keep-last-1 camera queue was overwritten while it was busy, or they were lost on the way)")
    warn_contention(results["fixed_rate"], budget, warnings)
    overhead = overhead_summary(summary["p50"], baseline)
    if not overhead["steady"]:
        warnings.append(f"the machine was not steady: the bare Predictor took {_fmt(overhead['before_p50_ms'])} ms before "
                        f"the graph and {_fmt(overhead['after_p50_ms'])} ms after it ({overhead['spread']:.0%} apart, "
                        f"more than {STEADY_TOLERANCE:.0%}); the overhead ratio uses their mean")
    if math.isfinite(overhead["ratio"]) and not overhead["valid"]:
        warnings.append(f"measurement error: end to end {_fmt(summary['p50'])} ms is below the bare Predictor's "
                        f"{_fmt(overhead['predictor_p50_ms'])} ms (before {_fmt(overhead['before_p50_ms'])}, after "
                        f"{_fmt(overhead['after_p50_ms'])}): the two sides did not run under the same conditions")
    with replay.condition:
        arrivals = {t: dict(v) for t, v in replay.first_arrival.items()}
    stages = stage_breakdown(replay.stats, timing["published"], arrivals, baseline.get("topics") or {n: ["segmentation", "detections"]
                                                                                          for n in nodes})
    for node, breakdown in stages.items():
        if not breakdown["adds_up"]:
            warnings.append(f"{node}: the stages add up to {_fmt(breakdown['sum_of_means_ms'])} ms of "
                            f"{_fmt(breakdown['mean']['end_to_end'])} ms end to end (mean), {breakdown['gap']:+.0%}: "
                            f"more than {STAGE_SUM_TOLERANCE:.0%} of the time is in no stage")
    return {
        "graph": graph,
        "bag": str(bag_path),
        "mode": mode,
        "rate": rate,
        "device": device,
        "engine": engine_line(node_stats, nodes, baseline),
        "budget": budget.as_dict(),
        "inference_nodes": nodes,
        "complete": not unanswered and not silent,
        "warnings": warnings,
        "frames": {"published": main_run["published"], "answered": main_run["answered"],
                   "per_output": main_run["per_output"], "missing": main_run["published"] - main_run["answered"],
                   "dropped": main_run["dropped"], "not_received": main_run["not_received"], "resent": main_run["resent"],
                   "by_node": main_run["nodes"]},
        "latency_ms": summary,
        "lockstep": {"passes": timing["passes"], "frames": len(timing["published"])},
        "latencies_ms": [timing["latencies_ms"].get(s, float("nan")) for s in timing["published"]],
        "throughput_fps": events_per_second(answered_times),
        "frames_dropped_by_nodes": main_run["dropped"],
        "inference_ms_per_frame": sum(node_stats.get(n, {}).get("inference_ms_p50", float("nan")) for n in nodes),
        "nodes": node_stats,
        "processes": results.get("processes", {}),
        "memory": {"inference_rss_mb": sum(rss.get(n, 0.0) for n in nodes), "rss_peak_mb": rss, "gpu_allocated_mb": gpu},
        "checkpoints": sizes,
        "size_mb": sum(s["size_mb"] for s in sizes.values()),
        "accuracy": scores,
        "overhead": overhead,
        "stages": stages,
        "baseline": {k: baseline.get(k) for k in ("stages_ms_p50", "before_p50_ms", "after_p50_ms", "cpus", "threads",
                                                   "color", "overlay", "engines", "frames")},
        "fixed_rate": results["fixed_rate"],
        "peak_throughput": results["peak_throughput"],
        "overlays": results.get("overlays", []),
    }


def warn_contention(runs: list[dict], budget: ComputeBudget, warnings: list[str]) -> None:
    """A graph that falls behind (drops > 5 %) while using under 80 % of its CPUs shared them with other load."""
    if not budget.graph_cpus:
        return
    for run in runs:
        used = sum(v for v in run["cpu_percent"].values() if np.isfinite(v))
        if run["dropped"] > 0.05 * run["published"] and used < 80.0 * len(budget.graph_cpus):
            warnings.append(f"at {run['rate_hz']:g} Hz the graph dropped frames while its processes used {used:.0f}% of "
                            f"{len(budget.graph_cpus) * 100}% (CPU {format_cpu_list(budget.graph_cpus)}): "
                            "other processes were running on the graph's CPUs, so its figures are contended")


def write_report(report: dict, out_dir: Path) -> None:
    """report.json, report.md and the plots into ``out_dir``."""
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


def consumer_sentence(graph: str, run: dict, nodes: list[str]) -> str:
    """What a consumer needing both outputs of one frame gets from a run."""
    answered, published = run["answered"], run["published"]
    text = (f"At {run['rate_hz']:g} Hz the {graph} graph gave both outputs of the same frame for {answered} of "
            f"{published} frames ({_fmt(run['output_fps'], 1)} fps)")
    if len(nodes) > 1:
        each = ", ".join(f"{n} answered {run['nodes'][n]['processed']}" for n in nodes if n in run["nodes"])
        text += (f"; {each}. The two nodes drop frames independently (newest frame wins in each), so a consumer "
                 f"that needs the mask and the boxes of one frame gets only the frames both happened to keep")
    return text + "."


def _passes_text(report: dict) -> str:
    lockstep = report.get("lockstep") or {}
    if lockstep.get("passes", 1) <= 1:
        return ""
    return f", {lockstep['frames']} frames: {lockstep['passes']} lockstep passes over the bag"


def replay_markdown(report: dict) -> str:
    """One graph's replay report as Markdown."""
    status = "complete" if report["complete"] else "**INCOMPLETE: frames were lost where they should not be (see the warnings)**"
    frames = report["frames"]
    lat = report["latency_ms"]
    lines = [
        f"# Replay evaluation: {report['graph']} graph",
        "",
        f"Bag `{report['bag']}`, {frames['published']} frames, mode {report['mode']}"
        + (f" (rate x{report['rate']})" if report["mode"] == "rate" else "") + f", device {report['device']}, "
        f"engine {report.get('engine', 'unknown')}. Status: {status}.",
        "",
        f"Budget: {report['budget']['line']}.",
        "",
    ]
    if report.get("machine"):
        machine = report["machine"]
        lines += [f"Machine: {machine['cpus']} CPUs; 1-minute load average {machine['loadavg_1min'][0]:.1f} at the start, "
                  f"{machine['loadavg_1min'][1]:.1f} at the end (with the graph's own processes; beyond them, other load "
                  "shared the CPUs).", ""]
    lines += [f"- warning: {w}" for w in report.get("warnings", [])] + ([""] if report.get("warnings") else [])
    per_output = " / ".join(f"{t} {n}" for t, n in frames["per_output"].items())
    lines += [
        "| measure | value |", "|---|---:|",
        f"| frames with every output / published | {frames['answered']} / {frames['published']} |",
        f"| answered per output | {per_output} |",
        f"| frames dropped by the nodes (newest frame wins) / never received by a node | "
        f"{frames['dropped']} / {frames['not_received']} |",
        f"| end-to-end latency p50 / p90 / p99 (ms){_passes_text(report)} | {_fmt(lat['p50'])} / {_fmt(lat['p90'])} / "
        f"{_fmt(lat['p99'])} |",
        f"| answered frames/s (first to last answer) | {_fmt(report['throughput_fps'], 2)} |",
        f"| bare Predictor p50 (ms), same frames and settings, fresh process: before / after the graph (mean) | "
        f"{_fmt(report['overhead']['before_p50_ms'])} / {_fmt(report['overhead']['after_p50_ms'])} "
        f"({_fmt(report['overhead']['predictor_p50_ms'])}){'' if report['overhead']['steady'] else ' NOT STEADY'} |",
        f"| node overhead (end-to-end p50 ÷ bare Predictor) | {overhead_text(report['overhead'])} |",
        f"| inference-node memory, peak RSS (MB) | {_fmt(report['memory']['inference_rss_mb'])} |",
        f"| GPU memory allocated, max (MB) | {_fmt(report['memory']['gpu_allocated_mb'])} |",
        f"| checkpoint size (MB) | {_fmt(report['size_mb'], 2)} |",
    ]
    peak = report.get("peak_throughput")
    if peak:
        lines.append(f"| peak throughput (frames/s, ≤5% lost, output ≥90% of input) | {_peak_text(peak)} |")
    acc = report.get("accuracy", {})
    if "segmentation" in acc:
        lines.append(f"| mIoU ({acc['segmentation']['frames']} frames) | {_fmt(acc['segmentation']['miou'], 3)} |")
    if "detection" in acc:
        det = acc["detection"]
        lines.append(f"| VOC AP50 / COCO mAP ({det['frames']} frames) | {_fmt(det['voc_map'], 3)} / {_fmt(det['coco_map'], 3)} |")
    if report.get("fixed_rate"):
        lines += ["", "## Fixed-rate runs", ""] + fixed_rate_table({report["graph"]: report})
        lines += [""] + [consumer_sentence(report["graph"], run, report["inference_nodes"]) for run in report["fixed_rate"]]
    lines += stage_markdown(report)
    lines += ["", "## Processes", "", "| process | CPUs allowed (every thread) | threads | peak RSS (MB) |", "|---|---|---:|---:|"]
    for name, placement in report["processes"].items():
        lines.append(f"| {name} | {placement['cpus']} | {placement['threads']} | {_fmt(report['memory']['rss_peak_mb'].get(name))} |")
    lines += ["", "## Nodes", "", "| node | inference p50 (ms) | total p50 (ms) | received | processed | dropped |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, node in report["nodes"].items():
        lines.append(f"| {name} | {_fmt(node.get('inference_ms_p50'))} | {_fmt(node.get('total_ms_p50'))} | "
                     f"{node.get('frames_received', 'n/a')} | {node.get('frames_processed', 'n/a')} | {node.get('frames_dropped', 'n/a')} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    if report.get("overlays"):
        lines += ["", "## Overlays", ""] + [f"![overlay]({Path(p).parent.name}/{Path(p).name})" for p in report["overlays"]]
    return "\n".join(lines) + "\n"


def stage_markdown(report: dict) -> list[str]:
    """The stage table: each node's stages (p50 and mean, ms) beside the bare Predictor's own timers."""
    stages = report.get("stages") or {}
    if not stages:
        return []
    bare = (report.get("baseline") or {}).get("stages_ms_p50") or {}
    nodes = list(stages)
    lines = ["", "## Where the time goes (lockstep pass)", "",
             "Per node, from the replay's send to the node's last answer; transport from the node's own "
             "CLOCK_MONOTONIC stamps (InferenceStats receive_time_ns, publish_time_ns) against the replay's send and "
             "receive times on this machine. The bare Predictor column is its own timers (p50, mean of the runs "
             "before and after the graph; all networks of the graph, one after the other). The stages are "
             "contiguous, so their sum misses only time inside the node that no stage timer covers; transport "
             "out can be negative where the replay receives an answer before the node's publish call has "
             "returned (loopback delivery within the publish).", "",
             "| stage | " + " | ".join(f"{n} p50 / mean (ms)" for n in nodes) + " | bare Predictor p50 (ms) |",
             "|---|" + "---:|" * (len(nodes) + 1)]
    for stage in FRAME_STAGES:
        cells = [f"{_fmt(stages[n]['p50'][stage])} / {_fmt(stages[n]['mean'][stage])}" for n in nodes]
        lines.append(f"| {STAGE_LABELS[stage]} | " + " | ".join(cells) + f" | {_fmt(bare.get(stage)) if stage in bare else ''} |")
    if (report.get("baseline") or {}).get("overlay"):
        lines.append(f"| {STAGE_LABELS['render']} | " + " | ".join("(in publish)" for _ in nodes) + f" | {_fmt(bare.get('render'))} |")
    lines.append("| **sum of the stages (means)** | " + " | ".join(_fmt(stages[n]["sum_of_means_ms"]) for n in nodes) + " | |")
    lines.append("| **end to end (mean)** | " + " | ".join(_fmt(stages[n]["mean"]["end_to_end"]) for n in nodes)
                 + f" | {_fmt(report['overhead']['predictor_p50_ms'])} (p50) |")
    lines.append("| stages add up within 5% | " + " | ".join(
        ("yes" if stages[n]["adds_up"] else f"**NO: {stages[n]['gap']:+.0%} in no stage**") for n in nodes) + " | |")
    return lines


def _peak_text(peak: dict) -> str:
    if peak["below_low"]:
        return f"< {peak['low_hz']:.1f} (the lowest rate tried failed)"
    return _fmt(peak["peak_fps"], 1) + (" (at the search's upper bound)" if peak["at_bound"] else "")


def fixed_rate_table(reports: dict[str, dict]) -> list[str]:
    """Markdown rows: one per graph and rate."""
    lines = ["| graph | rate (Hz) | sent | per output | every output | dropped / not received | "
             "latency p50 / p90 / p99 (ms) | jitter (ms) | out (fps) | CPU % of one core (per process) | RSS (MB) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for graph, report in reports.items():
        for run in report.get("fixed_rate", []):
            lat = run["latency_ms"]
            per_output = ", ".join(f"{t} {n}" for t, n in run["per_output"].items())
            cpu = ", ".join(f"{n} {_fmt(v, 0)}" for n, v in run["cpu_percent"].items())
            rss = ", ".join(f"{n} {_fmt(v, 0)}" for n, v in run["rss_mb"].items())
            lines.append(f"| {graph} | {run['rate_hz']:g} | {run['published']} | {per_output} | {run['answered']} | "
                         f"{run['dropped']} / {run['not_received']} | {_fmt(lat['p50'])} / {_fmt(lat['p90'])} / {_fmt(lat['p99'])} | "
                         f"{_fmt(run['jitter_ms'])} | {_fmt(run['output_fps'])} | {cpu} | {rss} |")
    return lines


def compare_reports(multitask: dict, naive: dict) -> dict:
    """Table II from two replay reports: figures side by side and the multitask gain of each.

    Gains are naive ÷ multitask for costs (latency, network time, memory, size) and
    multitask ÷ naive for rates (peak throughput, frames answered at a fixed rate): > 1
    means the multitask graph is better.
    """
    def row(report: dict) -> dict:
        acc = report.get("accuracy", {})
        memory = report["memory"]
        gpu = memory.get("gpu_allocated_mb")
        peak = report.get("peak_throughput") or {}
        return {
            "latency_ms_p50": report["latency_ms"]["p50"],
            "inference_ms": report["inference_ms_per_frame"],
            "predictor_ms": report["overhead"]["predictor_p50_ms"],
            "overhead": report["overhead"],
            "peak_fps": peak.get("peak_fps"),
            "fixed_rate": {f"{r['rate_hz']:g}": {"answered": r["answered"], "published": r["published"],
                                                  "latency_ms_p50": r["latency_ms"]["p50"], "latency_ms_p99": r["latency_ms"]["p99"]}
                           for r in report.get("fixed_rate", [])},
            "memory_mb": gpu if gpu else memory["inference_rss_mb"],
            "memory_kind": "gpu_allocated" if gpu else "rss",
            "size_mb": report["size_mb"],
            # the evaluation key scheme (mtl_perception.evaluation.scores), as in training
            "seg_miou": acc.get("segmentation", {}).get("miou"),
            "det_voc_ap50": acc.get("detection", {}).get("voc_map"),
            "det_coco_map": acc.get("detection", {}).get("coco_map"),
            "complete": report["complete"],
        }

    m, n = row(multitask), row(naive)
    fixed = {}
    for rate in m["fixed_rate"]:
        if rate in n["fixed_rate"]:
            a, b = m["fixed_rate"][rate], n["fixed_rate"][rate]
            fixed[rate] = {"answered": ratio(a["answered"], b["answered"]),
                           "latency_p50": ratio(b["latency_ms_p50"], a["latency_ms_p50"]),
                           "latency_p99": ratio(b["latency_ms_p99"], a["latency_ms_p99"])}
    return {
        "multitask": m,
        "naive": n,
        "ratios": {
            "speed": ratio(n["latency_ms_p50"], m["latency_ms_p50"]),
            "inference": ratio(n["inference_ms"], m["inference_ms"]),
            "predictor": ratio(n["predictor_ms"], m["predictor_ms"]),
            "throughput": ratio(m["peak_fps"], n["peak_fps"]),
            "fixed_rate": fixed,
            "memory": ratio(n["memory_mb"], m["memory_mb"]),
            "size": ratio(n["size_mb"], m["size_mb"]),
        },
        "budget": multitask["budget"],
        "machine": {g: r.get("machine") for g, r in (("multitask", multitask), ("naive", naive))},
        "device": multitask["device"],
        "engines": {"multitask": multitask.get("engine", "unknown"), "naive": naive.get("engine", "unknown")},
        "bag": multitask["bag"],
        "mode": multitask["mode"],
        "complete": m["complete"] and n["complete"],
        "consumer": [consumer_sentence("naive", run, naive["inference_nodes"]) for run in naive.get("fixed_rate", [])],
        "warnings": [f"{graph}: {w}" for graph, report in (("multitask", multitask), ("naive", naive))
                     for w in report.get("warnings", [])],
    }


def _load_lines(machines: dict) -> list[str]:
    loads = [f"{graph} {m['loadavg_1min'][0]:.1f} → {m['loadavg_1min'][1]:.1f}" for graph, m in machines.items() if m]
    if not loads:
        return []
    cpus = next(m["cpus"] for m in machines.values() if m)
    return [f"Machine: {cpus} CPUs; 1-minute load average during each replay: {', '.join(loads)}.", ""]


def _engines(table: dict) -> str:
    engines = table.get("engines") or {}
    if len(set(engines.values())) == 1:
        return f"{next(iter(engines.values()))} (both graphs)"
    return ", ".join(f"{graph}: {text}" for graph, text in engines.items()) or "unknown"


def compare_markdown(table: dict, reports: dict[str, dict] | None = None) -> str:
    """The comparison as Markdown (with the fixed-rate detail when ``reports`` are given)."""
    m, n, r = table["multitask"], table["naive"], table["ratios"]
    memory = "GPU allocated (MB)" if m["memory_kind"] == "gpu_allocated" else "inference-node peak RSS (MB)"
    rows = [
        (f"end-to-end latency p50, {table['mode']} (ms)", m["latency_ms_p50"], n["latency_ms_p50"], r["speed"], 1),
        ("networks alone, one after the other, same budget (ms)", m["predictor_ms"], n["predictor_ms"], r["predictor"], 1),
        ("network time in the nodes, sum of p50s (ms)", m["inference_ms"], n["inference_ms"], r["inference"], 1),
        ("peak throughput (frames/s with every output)", m["peak_fps"], n["peak_fps"], r["throughput"], 1),
    ]
    for rate, gains in r["fixed_rate"].items():
        a, b = m["fixed_rate"][rate], n["fixed_rate"][rate]
        rows += [(f"{rate} Hz: frames with every output (of {a['published']} / {b['published']})", a["answered"], b["answered"],
                  gains["answered"], 0),
                 (f"{rate} Hz: latency p50 (ms)", a["latency_ms_p50"], b["latency_ms_p50"], gains["latency_p50"], 1),
                 (f"{rate} Hz: latency p99 (ms)", a["latency_ms_p99"], b["latency_ms_p99"], gains["latency_p99"], 1)]
    rows += [(memory, m["memory_mb"], n["memory_mb"], r["memory"], 0),
             ("checkpoint size (MB)", m["size_mb"], n["size_mb"], r["size"], 2)]
    lines = [
        f"Bag `{table['bag']}`, device {table['device']}, engine {_engines(table)}."
        + ("" if table["complete"] else " **INCOMPLETE: frames were lost where they should not be.**"),
        "",
        f"Budget: {table['budget']['line']}.",
        "",
        *_load_lines(table.get("machine") or {}),
        *[f"- warning: {w}" for w in table.get("warnings", [])],
        *([""] if table.get("warnings") else []),
        "| | multitask | naive (seg + det nodes) | multitask gain |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {_fmt(a, d)} | {_fmt(b, d)} | {_fmt(c, 2, 'x')} |" for name, a, b, c, d in rows]
    lines.append(f"| node overhead (end-to-end p50 ÷ bare Predictor of the same engine and settings) | "
                 f"{overhead_text(m['overhead'])} | {overhead_text(n['overhead'])} | |")
    unsteady = [g for g, row in (("multitask", m), ("naive", n)) if not row["overhead"].get("steady", True)]
    lines += [
        f"| mIoU | {_fmt(m['seg_miou'], 3)} | {_fmt(n['seg_miou'], 3)} | |",
        f"| VOC AP50 | {_fmt(m['det_voc_ap50'], 3)} | {_fmt(n['det_voc_ap50'], 3)} | |",
        f"| COCO mAP@[.5:.95] | {_fmt(m['det_coco_map'], 3)} | {_fmt(n['det_coco_map'], 3)} | |",
        "",
        "Gain: naive ÷ multitask for latency, network time, memory and size; multitask ÷ naive for throughput "
        "and frames answered. Above 1 the multitask graph is better. At a shared budget the naive graph's two "
        "nodes time-share the same CPUs, so each node's network time includes the other's turns; the bare "
        "Predictor row runs the networks one after the other on the same budget.",
        "",
        f"Node overhead target: ≤ {OVERHEAD_TARGET:.2f}x for both graphs: "
        + ("PASS" if m["overhead"].get("target_met") and n["overhead"].get("target_met") else "FAIL")
        + ". The bare Predictor runs each graph's own node parameters in a fresh process on the graph's CPUs, "
        "before the graph starts and after it stops (mean of the two)"
        + (f"; the machine was NOT steady during the {' and '.join(unsteady)} replay (the two differ by more than "
           f"{STEADY_TOLERANCE:.0%})" if unsteady else "") + ".",
    ]
    if table.get("consumer"):
        lines += [""] + table["consumer"]
    if reports and any(rep.get("fixed_rate") for rep in reports.values()):
        lines += ["", "## Fixed-rate runs", ""] + fixed_rate_table(reports)
    return "\n".join(lines) + "\n"
