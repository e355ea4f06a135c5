"""``make demo``: Table II on real aerial images, replayed through both ROS 2 graphs at one budget.

1. builds a short bag from real images shipped by PyPI packages (deepforest's held-out
   aerial tiles with tree boxes and its DJI drone photo, solaris' satellite tile with
   building masks; :func:`mtl_perception.bags.demo.make_demo_bag`);
2. replays it through the multitask graph with the shipped demo checkpoint (CUDA when
   present, else CPU), then through the naive two-node graph: lockstep for accuracy and
   latency, fixed-rate runs (10 and 30 Hz) and the peak-throughput search, every process
   of each graph within the same budget (default ``shared``: on 2 cores the graph on CPU 1
   with one torch thread per network, the replay on CPU 0);
3. writes the comparison, both reports, plots and overlay PNGs to ``demo_output/`` and
   prints the table.

``--quick`` shortens the runs (tests): 2 s fixed-rate runs, a 2-step throughput search.
Exit codes: 0 complete, 1 a graph failed, 2 bad input, 3 incomplete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.bags.demo import make_demo_bag
from mtl_perception.graphs.budget import ComputeBudget, add_budget_arguments, budget_from_args, check_device
from mtl_perception.replay.compare import run_compare
from mtl_perception.replay.replay_eval import add_perf_arguments, run_cli

QUICK = {"fixed_seconds": 2.0, "peak_options": {"trial_seconds": 1.5, "min_frames": 8, "steps": 2}}


def run_demo(out: Path, budget: ComputeBudget, mode: str = "lockstep", rate: float = 1.0, fixed_rates=(10.0, 30.0),
             fixed_seconds: float = 6.0, peak: bool = True, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "demo_bag"
    print(f"[demo] building {bag} from deepforest/solaris sample images", flush=True)
    make_demo_bag(bag, force=True)
    options = dict(QUICK) if quick else {"fixed_seconds": fixed_seconds}
    return run_compare(bag, out, mode, rate, arguments={"device": budget.device} if budget.device else {},
                       budget=budget, fixed_rates=fixed_rates, peak=peak, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.replay.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--device", type=check_device, help="auto | cpu | cuda | cuda:N (default: the YAML's, auto)")
    parser.add_argument("--mode", choices=("lockstep", "rate"), default="lockstep")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="short runs (for tests); figures are rougher")
    add_perf_arguments(parser, peak_default=True)
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()

    def show(table: dict) -> None:
        print("\n" + table["markdown"])
        print(f"[demo] comparison: {out / 'compare.md'} (JSON: {out / 'compare.json'})")
        for graph, paths in table["overlays"].items():
            print(f"[demo] {graph} overlays: {', '.join(paths) if paths else 'none'}")
        print(f"[demo] full reports: {out / 'multitask' / 'report.md'}, {out / 'naive' / 'report.md'}")

    return run_cli(lambda: run_demo(out, budget_from_args(args), args.mode, args.rate, args.fixed_rates,
                                    args.fixed_seconds, args.peak, args.quick), show)


if __name__ == "__main__":
    sys.exit(main())
