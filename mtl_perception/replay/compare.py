"""Table II inside ROS: replay one bag through the multitask graph, then the naive graph, at one budget.

    python -m mtl_perception.replay.compare --bag BAG --out DIR [--mode lockstep|rate] [--device cpu|cuda|cuda:N]
        [--backend auto|torch|onnxruntime] [--precision fp32|int8|...] [--engine-cache-dir DIR]
        [--checkpoint P] [--segmentation-checkpoint P] [--detection-checkpoint P]
        [--budget shared|per-network] [--graph-cpus 1] [--cpu-threads 1]
        [--fixed-rates 10,30] [--fixed-seconds 6] [--peak | --no-peak]

Both graphs run one after the other on the same machine with the same YAML, the same engine
(``--backend``/``--precision``, default the YAML's) and the same compute budget (default ``shared``: one CPU set and thread count, or one GPU, for every
process of a graph; :mod:`mtl_perception.graphs.budget`). Each gets a full replay report in
``DIR/multitask`` and ``DIR/naive``; ``DIR/compare.md`` / ``compare.json`` hold the
side-by-side table (budget line, lockstep latency, peak throughput, fixed-rate rows,
memory, size, accuracy) with the multitask gain of each row.

Exit codes: as replay_eval (0 complete, 1 a graph failed, 2 bad input, 3 incomplete).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.atomic import write_text_atomic
from mtl_perception.evaluation.report import per_class_from, plot_latency_cdf, plot_per_class, write_json
from mtl_perception.graphs.budget import ComputeBudget, budget_from_args, plan_budget
from mtl_perception.graphs.graph import ENGINE_ARGUMENTS
from mtl_perception.replay.replay_eval import add_graph_arguments, replay_options, run_cli, run_replay
from mtl_perception.replay.replay_report import compare_markdown, compare_reports

_OWN_ARGUMENTS = {"multitask": ("checkpoint",), "naive": ("segmentation_checkpoint", "detection_checkpoint")}
_SHARED_ARGUMENTS = ("device", *ENGINE_ARGUMENTS)  # both graphs run the same engine


def run_compare(bag, out_dir, mode="lockstep", rate=1.0, params_file=None, arguments=None,
                budget: ComputeBudget | None = None, **options) -> dict:
    """Replay both graphs within ``budget`` and write the comparison; returns it (with both reports
    under ``reports`` and the Markdown under ``markdown``). ``options`` go to :func:`run_replay`."""
    out_dir = Path(out_dir)
    arguments = dict(arguments or {})
    budget = budget or plan_budget("shared", arguments.get("device"))
    extra = {"params_file": params_file} if params_file else {}
    reports = {}
    for graph in ("multitask", "naive"):
        graph_arguments = {k: v for k, v in arguments.items() if k in _SHARED_ARGUMENTS or k in _OWN_ARGUMENTS[graph]}
        reports[graph] = run_replay(bag, graph, out_dir / graph, mode, rate, arguments=graph_arguments, budget=budget,
                                    **extra, **options)
    table = compare_reports(reports["multitask"], reports["naive"])
    plots = [plot_latency_cdf({g: r["latencies_ms"] for g, r in reports.items()}, out_dir / "latency_cdf.png")]
    iou = per_class_from(reports, "segmentation", "per_class_iou")
    if iou:
        plots.append(plot_per_class(iou, "IoU per class", out_dir / "per_class_iou.png"))
    ap = per_class_from(reports, "detection", "per_class_ap_voc")
    if ap:
        plots.append(plot_per_class(ap, "AP50 per class", out_dir / "per_class_ap.png"))
    table["plots"] = [str(p) for p in plots]
    table["overlays"] = {g: r.get("overlays", []) for g, r in reports.items()}
    markdown = "# Multitask vs naive, replayed through ROS 2 (Table II)\n\n" + compare_markdown(table, reports)
    markdown += "\n" + "\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots) + "\n"
    write_json(out_dir / "compare.json", table)
    write_text_atomic(out_dir / "compare.md", markdown)
    table["reports"] = reports
    table["markdown"] = markdown
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.replay.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", help="multitask checkpoint (default: the YAML's)")
    parser.add_argument("--segmentation-checkpoint")
    parser.add_argument("--detection-checkpoint")
    add_graph_arguments(parser, peak_default=True)
    args = parser.parse_args(argv)
    arguments = {k: getattr(args, k) for k in ("checkpoint", "segmentation_checkpoint", "detection_checkpoint", "device",
                                               *ENGINE_ARGUMENTS)}
    return run_cli(lambda: run_compare(args.bag, args.out, args.mode, args.rate, args.params, arguments,
                                       budget=budget_from_args(args), **replay_options(args)),
                   lambda table: print(table["markdown"] + f"\nwrote {Path(args.out) / 'compare.md'}"))


if __name__ == "__main__":
    sys.exit(main())
