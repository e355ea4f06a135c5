"""Table II inside ROS: replay one bag through the multitask graph, then the naive graph.

    python -m mtl_perception.ros.compare --bag BAG --out DIR [--mode lockstep|rate] [--device cpu]
        [--checkpoint P] [--segmentation-checkpoint P] [--detection-checkpoint P]

Both graphs run one after the other on the same machine with the same YAML; each gets
a full replay report in ``DIR/multitask`` and ``DIR/naive``, and ``DIR/compare.md`` /
``compare.json`` hold the side-by-side table with naive ÷ multitask ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.atomic import write_text_atomic
from mtl_perception.evaluation.report import (compare_markdown, compare_reports, per_class_from,
                                              plot_latency_cdf, plot_per_class, write_json)
from mtl_perception.ros.replay_eval import add_graph_arguments, run_cli, run_replay


def run_compare(bag, out_dir, mode="lockstep", rate=1.0, params_file=None, arguments=None, **options) -> dict:
    """Replay both graphs and write the comparison; returns it (with both reports under ``reports``)."""
    out_dir = Path(out_dir)
    arguments = dict(arguments or {})
    extra = {"params_file": params_file} if params_file else {}
    reports = {}
    for graph in ("multitask", "naive"):
        own = ("checkpoint",) if graph == "multitask" else ("segmentation_checkpoint", "detection_checkpoint")
        graph_arguments = {k: v for k, v in arguments.items() if k == "device" or k in own}
        reports[graph] = run_replay(bag, graph, out_dir / graph, mode, rate, arguments=graph_arguments, **extra, **options)
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
    markdown = "# Multitask vs naive, replayed through ROS 2 (Table II)\n\n" + compare_markdown(table)
    markdown += "\n" + "\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots) + "\n"
    write_json(out_dir / "compare.json", table)
    write_text_atomic(out_dir / "compare.md", markdown)
    table["reports"] = reports
    table["markdown"] = markdown
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.ros.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", help="multitask checkpoint (default: the YAML's)")
    parser.add_argument("--segmentation-checkpoint")
    parser.add_argument("--detection-checkpoint")
    add_graph_arguments(parser)
    args = parser.parse_args(argv)
    arguments = {k: getattr(args, k) for k in ("checkpoint", "segmentation_checkpoint", "detection_checkpoint", "device")}

    return run_cli(lambda: run_compare(args.bag, args.out, args.mode, args.rate, args.params, arguments,
                                       max_frames=args.max_frames, frame_timeout=args.frame_timeout,
                                       startup_timeout=args.startup_timeout, overlays=args.overlays,
                                       camera_topic=args.camera_topic, localhost=args.transport == "localhost"),
                   lambda table: print(table["markdown"] + f"\nwrote {Path(args.out) / 'compare.md'}"))


if __name__ == "__main__":
    sys.exit(main())
