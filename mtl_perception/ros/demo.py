"""``make demo``: Table II on real aerial images, replayed through both ROS 2 graphs.

1. builds a short bag from real images shipped by PyPI packages (deepforest's held-out
   aerial tiles with tree boxes and its DJI drone photo, solaris' satellite tile with
   building masks; :func:`mtl_perception.bags.demo.make_demo_bag`);
2. replays it through the multitask graph with the shipped demo checkpoint (CUDA when
   present, else CPU), then through the naive two-node graph, in lockstep;
3. writes the comparison, both reports, plots and overlay PNGs to ``demo_output/`` and
   prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.bags.demo import make_demo_bag
from mtl_perception.ros.compare import run_compare
from mtl_perception.ros.replay_eval import run_cli


def run_demo(out: Path, device: str | None, mode: str, rate: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "demo_bag"
    print(f"[demo] building {bag} from deepforest/solaris sample images", flush=True)
    make_demo_bag(bag, force=True)
    table = run_compare(bag, out, mode, rate, arguments={"device": device} if device else {})
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), help="default: the YAML's (auto)")
    parser.add_argument("--mode", choices=("lockstep", "rate"), default="lockstep")
    parser.add_argument("--rate", type=float, default=1.0)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()

    def show(table: dict) -> None:
        print("\n" + table["markdown"])
        print(f"[demo] comparison: {out / 'compare.md'} (JSON: {out / 'compare.json'})")
        for graph, paths in table["overlays"].items():
            print(f"[demo] {graph} overlays: {', '.join(paths) if paths else 'none'}")
        print(f"[demo] full reports: {out / 'multitask' / 'report.md'}, {out / 'naive' / 'report.md'}")

    return run_cli(lambda: run_demo(out, args.device, args.mode, args.rate), show)


if __name__ == "__main__":
    sys.exit(main())
