"""Replay-evaluation reports: latency summaries, Table II comparison, Markdown and plots (no ROS)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mtl_perception.atomic import atomic_output, write_json_atomic
from mtl_perception.metrics import json_safe


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max of latencies in ms (NaN when there are none)."""
    values = np.asarray([v for v in values_ms if v is not None and math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan, "max": math.nan}
    return {"count": int(values.size), "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)), "mean": float(values.mean()), "max": float(values.max())}


def write_json(path: Path, data: dict) -> None:
    """JSON with NaN as null, written atomically."""
    write_json_atomic(path, json_safe(data))


def _fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def replay_markdown(report: dict) -> str:
    """One graph's replay report as Markdown."""
    status = "complete" if report["complete"] else "**INCOMPLETE — figures below cover only the frames answered**"
    frames = report["frames"]
    lat = report["latency_ms"]
    lines = [
        f"# Replay evaluation: {report['graph']} graph",
        "",
        f"Bag `{report['bag']}`, {frames['published']} frames, mode {report['mode']}"
        + (f" (rate x{report['rate']})" if report["mode"] == "rate" else "") + f", device {report['device']}. Status: {status}.",
        "",
    ]
    for warning in report.get("warnings", []):
        lines.append(f"- warning: {warning}")
    if report.get("warnings"):
        lines.append("")
    lines += [
        "| measure | value |", "|---|---:|",
        f"| frames answered / published | {frames['answered']} / {frames['published']} |",
        f"| end-to-end latency p50 / p90 / p99 (ms) | {_fmt(lat['p50'])} / {_fmt(lat['p90'])} / {_fmt(lat['p99'])} |",
        f"| throughput (frames/s) | {_fmt(report['throughput_fps'], 2)} |",
        f"| frames dropped (nodes' counters) | {report['frames_dropped_by_nodes']} |",
        f"| Predictor alone p50 (ms), same frames | {_fmt(report['overhead']['predictor_p50_ms'])} |",
        f"| node overhead (end-to-end ÷ Predictor) | {_fmt(report['overhead']['ratio'], 2, 'x')} |",
        f"| inference-node memory, peak RSS (MB) | {_fmt(report['memory']['inference_rss_mb'])} |",
        f"| GPU memory allocated, max (MB) | {_fmt(report['memory']['gpu_allocated_mb'])} |",
        f"| checkpoint size (MB) | {_fmt(report['size_mb'], 2)} |",
    ]
    accuracy = report.get("accuracy", {})
    if "segmentation" in accuracy:
        seg = accuracy["segmentation"]
        lines.append(f"| mIoU ({seg['frames']} frames) | {_fmt(seg['miou'], 3)} |")
    if "detection" in accuracy:
        det = accuracy["detection"]
        lines.append(f"| VOC AP50 / COCO mAP ({det['frames']} frames) | {_fmt(det['voc_map'], 3)} / {_fmt(det['coco_map'], 3)} |")
    lines += ["", "## Nodes", "", "| node | inference p50 (ms) | total p50 (ms) | received | processed | dropped | peak RSS (MB) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, node in report["nodes"].items():
        lines.append(f"| {name} | {_fmt(node.get('inference_ms_p50'))} | {_fmt(node.get('total_ms_p50'))} | "
                     f"{node.get('frames_received', 'n/a')} | {node.get('frames_processed', 'n/a')} | "
                     f"{node.get('frames_dropped', 'n/a')} | {_fmt(node.get('rss_peak_mb'))} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    if report.get("overlays"):
        lines += ["", "## Overlays", ""] + [f"![overlay]({Path(p).parent.name}/{Path(p).name})" for p in report["overlays"]]
    return "\n".join(lines) + "\n"


def _ratio(naive: float | None, multitask: float | None) -> float:
    if naive is None or multitask is None or not multitask or not math.isfinite(naive) or not math.isfinite(multitask):
        return math.nan
    return naive / multitask


def compare_reports(multitask: dict, naive: dict) -> dict:
    """Table II from two replay reports: figures side by side and naive ÷ multitask ratios."""
    def row(report: dict) -> dict:
        accuracy = report.get("accuracy", {})
        memory = report["memory"]
        gpu = memory.get("gpu_allocated_mb")
        return {
            "latency_ms_p50": report["latency_ms"]["p50"],
            "inference_ms": report["inference_ms_per_frame"],
            "memory_mb": gpu if gpu else memory["inference_rss_mb"],
            "memory_kind": "gpu_allocated" if gpu else "rss",
            "size_mb": report["size_mb"],
            "miou": accuracy.get("segmentation", {}).get("miou"),
            "voc_map": accuracy.get("detection", {}).get("voc_map"),
            "coco_map": accuracy.get("detection", {}).get("coco_map"),
            "complete": report["complete"],
        }

    m, n = row(multitask), row(naive)
    return {
        "multitask": m,
        "naive": n,
        "ratios": {
            "speed": _ratio(n["latency_ms_p50"], m["latency_ms_p50"]),
            "inference": _ratio(n["inference_ms"], m["inference_ms"]),
            "memory": _ratio(n["memory_mb"], m["memory_mb"]),
            "size": _ratio(n["size_mb"], m["size_mb"]),
        },
        "device": multitask["device"],
        "bag": multitask["bag"],
        "mode": multitask["mode"],
        "complete": m["complete"] and n["complete"],
    }


def compare_markdown(table: dict) -> str:
    m, n, r = table["multitask"], table["naive"], table["ratios"]
    memory = "GPU allocated (MB)" if m["memory_kind"] == "gpu_allocated" else "inference-node RSS (MB)"
    rows = [
        ("end-to-end latency p50 (ms)", m["latency_ms_p50"], n["latency_ms_p50"], r["speed"], 1),
        ("network time per frame (ms)", m["inference_ms"], n["inference_ms"], r["inference"], 1),
        (memory, m["memory_mb"], n["memory_mb"], r["memory"], 0),
        ("checkpoint size (MB)", m["size_mb"], n["size_mb"], r["size"], 2),
    ]
    lines = [
        f"Bag `{table['bag']}`, {table['mode']} replay, device {table['device']}."
        + ("" if table["complete"] else " **INCOMPLETE: some frames were not answered.**"),
        "",
        "| | multitask | naive (seg + det nodes) | naive ÷ multitask |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {_fmt(a, d)} | {_fmt(b, d)} | {_fmt(c, 2, 'x')} |" for name, a, b, c, d in rows]
    lines += [
        f"| mIoU | {_fmt(m['miou'], 3)} | {_fmt(n['miou'], 3)} | |",
        f"| VOC AP50 | {_fmt(m['voc_map'], 3)} | {_fmt(n['voc_map'], 3)} | |",
        f"| COCO mAP@[.5:.95] | {_fmt(m['coco_map'], 3)} | {_fmt(n['coco_map'], 3)} | |",
    ]
    return "\n".join(lines) + "\n"


def plot_latency_cdf(latencies: dict[str, Sequence[float]], path: Path) -> Path:
    """Empirical CDF of end-to-end latency, one curve per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in latencies.items():
        values = np.sort(np.asarray([v for v in values if math.isfinite(v)]))
        if values.size:
            ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=f"{label} (n={values.size})")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_per_class(values: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """Grouped bars of a per-class metric (IoU or AP), one group per class, one bar per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(values)
    classes: list[str] = []
    for per_class in values.values():
        classes += [c for c in per_class if c not in classes]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(classes) * max(1, len(labels))), 3.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        heights = [values[label].get(c) for c in classes]
        heights = [h if h is not None and math.isfinite(h) else 0.0 for h in heights]
        ax.bar(np.arange(len(classes)) + i * width, heights, width, label=label)
    ax.set_xticks(np.arange(len(classes)) + width * (len(labels) - 1) / 2, classes)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def _save_figure(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)


def per_class_from(reports: dict[str, dict], task: str, key: str) -> dict[str, dict[str, float]]:
    """{label: {class: value}} of ``accuracy[task][key]`` for the reports that have it."""
    out = {}
    for label, report in reports.items():
        values = report.get("accuracy", {}).get(task, {}).get(key)
        if values:
            out[label] = values
    return out
