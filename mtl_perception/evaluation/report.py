"""Report helpers shared by bench, mtl-eval and the replay: latency summaries, ratios, JSON and plots (no ROS)."""

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


def ratio(numerator: float | None, denominator: float | None) -> float:
    """``numerator / denominator``; NaN when either is missing, not finite, or the denominator is 0."""
    if (numerator is None or denominator is None or not denominator or not math.isfinite(numerator)
            or not math.isfinite(denominator)):
        return math.nan
    return numerator / denominator


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
