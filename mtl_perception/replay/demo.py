"""``make demo``: Table II on real aerial images, replayed through both ROS 2 graphs at one budget.

1. builds a short bag from real images shipped by PyPI packages (deepforest's held-out
   aerial tiles with tree boxes and its DJI drone photo, solaris' satellite tile with
   building masks; :func:`mtl_perception.bags.demo.make_demo_bag`);
2. replays it through the multitask graph with the shipped demo checkpoint (CUDA when
   present, else CPU), then through the naive two-node graph: lockstep for accuracy and
   latency, fixed-rate runs (10 and 30 Hz) and the peak-throughput search, every process
   of each graph within the same budget (default ``shared``: on 2 cores the graph on CPU 1
   with one torch thread per network, the replay on CPU 0);
3. with ``--engine-baseline torch`` (``make demo``'s default), replays the multitask graph once
   more in lockstep with the torch engine, so the engine's gain is a ratio measured in the same
   run (``engines.md``);
4. writes the comparison, both reports, plots and overlay PNGs to ``demo_output/`` and
   prints the table.

``--engine`` picks every node's engine: ``auto`` (the YAML's default: onnxruntime on the CPU),
``torch``, ``onnxruntime`` or ``int8`` (onnxruntime int8, calibrated on the demo models'
*training* tiles, written to ``calibration_tiles/``; never on the held-out frames the demo scores).

``--quick`` shortens the runs (tests): 2 s fixed-rate runs, a 2-step throughput search.
Exit codes: 0 complete, 1 a graph failed, 2 bad input, 3 incomplete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_perception.atomic import write_text_atomic
from mtl_perception.bags.demo import make_demo_bag
from mtl_perception.evaluation.report import write_json
from mtl_perception.graphs.budget import ComputeBudget, add_budget_arguments, budget_from_args, check_device
from mtl_perception.replay.compare import run_compare
from mtl_perception.replay.replay_eval import add_perf_arguments, run_cli, run_replay

QUICK = {"fixed_seconds": 2.0, "peak_options": {"trial_seconds": 1.5, "min_frames": 8, "steps": 2}}
DEMO_ENGINES = ("auto", "torch", "onnxruntime", "int8")
# The engines issue's demo target: the default engine's multitask lockstep p50 against torch's.
ENGINE_SPEEDUP_TARGET = 1.8
CALIBRATION_FRAMES = 32


def engine_arguments(engine: str, out: Path) -> dict:
    """Graph arguments of a demo ``engine`` (``auto``: the YAML's own)."""
    if engine == "auto":
        return {}
    if engine == "int8":
        return {"backend": "onnxruntime", "precision": "int8", "calibration": str(write_calibration_tiles(out))}
    return {"backend": engine, "precision": "fp32"}


def write_calibration_tiles(out: Path, count: int = CALIBRATION_FRAMES) -> Path:
    """The demo models' training tiles as PNGs in ``out/calibration_tiles`` (int8's calibration
    source: the held-out tiles of the demo bag are never among them)."""
    from PIL import Image

    from mtl_perception.engines.calibration import aerial_training_set

    folder = out / "calibration_tiles"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for index, frame in enumerate(aerial_training_set(count).frames):
        partial = folder / f".tile_{index:03d}.png.partial"
        Image.fromarray(frame).save(partial, format="PNG")
        partial.replace(folder / f"tile_{index:03d}.png")
    return folder


def engine_section(default: dict, baseline: dict, engine: str) -> dict:
    """The multitask graph's lockstep p50 with the demo's engine against torch's, and whether
    it kept up with 30 Hz (the fixed-rate run), as a dict with ``markdown``."""
    fast, slow = default["latency_ms"]["p50"], baseline["latency_ms"]["p50"]
    ratio = slow / fast if fast else None
    status = "n/a" if ratio is None else ("PASS" if ratio >= ENGINE_SPEEDUP_TARGET else "FAIL")
    lines = ["## Engine against torch (multitask graph, lockstep, same run, same budget)", "",
             "| engine | lockstep p50 (ms) |", "|---|---:|",
             f"| {default.get('engine', engine)} | {fast:.1f} |",
             f"| {baseline.get('engine', 'torch')} | {slow:.1f} |", "",
             f"- **{status}** default engine >= {ENGINE_SPEEDUP_TARGET}x faster than torch: "
             + ("n/a" if ratio is None else f"{ratio:.2f}x")]
    for run in default.get("fixed_rate", []):
        if f"{run['rate_hz']:g}" == "30":
            short = run["published"] - run["answered"]
            lines.append(f"- At 30 Hz the multitask graph answered {run['answered']} of {run['published']} frames with "
                         "both outputs" + ("." if not short else
                                           f": {short} short ({100 * short / max(run['published'], 1):.0f}%)."))
    return {"engine": default.get("engine"), "baseline_engine": baseline.get("engine"), "lockstep_p50_ms": fast,
            "baseline_lockstep_p50_ms": slow, "speedup": ratio, "status": status, "markdown": "\n".join(lines) + "\n"}


def run_demo(out: Path, budget: ComputeBudget, mode: str = "lockstep", rate: float = 1.0, fixed_rates=(10.0, 30.0),
             fixed_seconds: float = 6.0, peak: bool = True, quick: bool = False, engine: str = "auto",
             engine_baseline: str | None = None, lockstep_frames: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "demo_bag"
    print(f"[demo] building {bag} from deepforest/solaris sample images", flush=True)
    make_demo_bag(bag, force=True)
    options = (dict(QUICK) if quick else {"fixed_seconds": fixed_seconds}) | {"lockstep_frames": lockstep_frames}
    arguments = ({"device": budget.device} if budget.device else {}) | engine_arguments(engine, out)
    table = run_compare(bag, out, mode, rate, arguments=arguments, budget=budget, fixed_rates=fixed_rates, peak=peak,
                        **options)
    if engine_baseline and engine != engine_baseline:
        print(f"[demo] multitask graph again, lockstep, engine {engine_baseline}", flush=True)
        baseline_arguments = ({"device": budget.device} if budget.device else {}) | engine_arguments(engine_baseline, out)
        baseline = run_replay(bag, "multitask", out / f"multitask_{engine_baseline}", mode, rate,
                              arguments=baseline_arguments, budget=budget, lockstep_frames=lockstep_frames)
        section = engine_section(table["reports"]["multitask"], baseline, engine)
        table["engine_comparison"] = section
        table["markdown"] += "\n" + section["markdown"]
        write_text_atomic(out / "compare.md", table["markdown"])
        write_json(out / "compare.json", {k: v for k, v in table.items() if k not in ("reports", "markdown")})
        write_text_atomic(out / "engines.md", f"# Demo engine against {engine_baseline}\n\n" + section["markdown"])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.replay.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--device", type=check_device, help="auto | cpu | cuda | cuda:N (default: the YAML's, auto)")
    parser.add_argument("--mode", choices=("lockstep", "rate"), default="lockstep")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="short runs (for tests); figures are rougher")
    parser.add_argument("--engine", choices=DEMO_ENGINES, default="auto",
                        help="every node's engine: auto (the YAML's: onnxruntime on the CPU) | torch | onnxruntime | "
                             "int8 (onnxruntime, calibrated on the training tiles)")
    parser.add_argument("--engine-baseline", choices=DEMO_ENGINES,
                        help="also replay the multitask graph in lockstep with this engine and report the speed-up "
                             "(make demo: torch)")
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
                                    args.fixed_seconds, args.peak, args.quick, args.engine, args.engine_baseline,
                                    args.lockstep_frames), show)


if __name__ == "__main__":
    sys.exit(main())
