"""The report of scripts/gpu_check.sh: the issue-10 targets judged from the run's own files.

    python scripts/gpu_check_report.py --work WORK --out OUT [--dry 0|1] [--budget-s S]

Reads what the steps left in WORK (steps.jsonl, bench_*/bench.json, replay/compare.json and
the per-graph reports, cuda_tests.xml, installed.json, logs/*.log) and writes five files to
OUT: summary.md, results.json, bench.md, replay.md, logs.txt. Standard library only (it runs
after every step, so it must be quick and must not need the step that failed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

BENCH_RUNS = ("bench_resnet50", "bench_mobilenet_v2", "bench_compiled_resnet50", "bench_compiled_mobilenet_v2",
              "bench_engines_cpu", "bench_engines_cuda")
HEADLINE_RUNS = ("bench_resnet50", "bench_compiled_resnet50")  # ResNet-50 512x512: the Predictor target
LOG_TAIL_BYTES = 400_000
# (key, what, comparison, threshold, unit), from issue 10 "Targets, H100/H200 class".
TARGETS = (
    ("predictor_fp16_p50_ms", "Predictor pre + network + post, ResNet-50 multitask 512x512, fp16: p50", "<=", 3.0, "ms"),
    ("node_30hz_p50_ms", "Node end-to-end at 1280x720, 30 Hz, both outputs published: p50", "<=", 6.0, "ms"),
    ("node_30hz_drops", "Node at 1280x720, 30 Hz: frames dropped or lost", "<=", 0, "frames"),
    ("node_non_network_ms", "Node non-network time (decode + pre + post + publish) at 1280x720", "<=", 1.5, "ms"),
    ("speed_ratio", "Multitask vs naive on one shared GPU: latency (naive / multitask)", ">=", 1.7, "x"),
    ("memory_ratio", "Multitask vs naive on one shared GPU: CUDA peak memory", ">=", 1.6, "x"),
    ("size_ratio", "Multitask vs naive: checkpoint size", ">=", 1.65, "x"),
)


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "–"


def read_steps(work: Path) -> list[dict]:
    steps = []
    for line in (work / "steps.jsonl").read_text().splitlines() if (work / "steps.jsonl").exists() else []:
        try:
            steps.append(json.loads(line))
        except ValueError:
            continue
    return steps


def read_junit(path: Path) -> list[dict]:
    """[{test, outcome: passed|failed|skipped|error, message}] from a pytest junit XML."""
    if not path.exists():
        return []
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return [{"test": str(path), "outcome": "error", "message": "unreadable junit XML"}]
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message") or (child.text or "").strip()[:500]
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return tests


def _ok_variants(bench: dict | None):
    for variant in (bench or {}).get("variants", []):
        if variant.get("status") == "ok":
            yield variant


def headline_variant(benches: dict[str, dict]) -> tuple[dict | None, str]:
    """The fastest ResNet-50 fp16 variant (multitask p50); the reason when there is none."""
    best, source = None, ""
    for run in HEADLINE_RUNS:
        for variant in _ok_variants(benches.get(run)):
            if variant["precision"] != "fp16":
                continue
            p50 = variant["results"]["multitask"]["latency_ms"]["p50"]
            if best is None or p50 < best["results"]["multitask"]["latency_ms"]["p50"]:
                best, source = variant, f"{run}, fp16 {variant['mode']}"
    if best is not None:
        return best, source
    reasons = [f"{run} fp16 {v['mode']}: {v['status']} ({v.get('reason')})"
               for run in HEADLINE_RUNS for v in (benches.get(run) or {}).get("variants", []) if v["precision"] == "fp16"]
    return None, "; ".join(reasons) or "no ResNet-50 bench ran"


def _fixed_rate(report: dict | None, hz: float) -> dict | None:
    for row in (report or {}).get("fixed_rate") or []:
        if _finite(row.get("rate_hz")) and abs(row["rate_hz"] - hz) < 1e-6:
            return row
    return None


def node_non_network_ms(report: dict | None) -> tuple[float | None, str]:
    """p50 of total minus p50 of network time of the multitask node (decode + pre + post + publish)."""
    stats = ((report or {}).get("nodes") or {}).get("multitask_node") or {}
    if "non_network_ms_p50" in stats:
        return stats["non_network_ms_p50"], "multitask_node InferenceStats, lockstep pass: p50 of total - network per frame"
    total, network = stats.get("total_ms_p50"), stats.get("inference_ms_p50")
    if _finite(total) and _finite(network):
        return total - network, "multitask_node InferenceStats, lockstep pass: p50(total) - p50(network)"
    return None, "no InferenceStats of multitask_node in the replay report"


def figures(benches: dict[str, dict], replay: dict[str, dict | None], steps: dict[str, dict]) -> dict[str, tuple]:
    """{target key: (value or None, where it comes from / why it is missing)}."""
    result: dict[str, tuple] = {}
    variant, source = headline_variant(benches)
    if variant is not None:
        frame = variant["results"]["multitask"]["frame_size"]
        result["predictor_fp16_p50_ms"] = (variant["results"]["multitask"]["latency_ms"]["p50"],
                                           f"{source}; {frame[0]}x{frame[1]} frames")
        ratio_source = source
    else:
        result["predictor_fp16_p50_ms"] = (None, source)
        # Without an fp16 figure (the CPU dry run) the ratios come from the first variant that ran.
        variant = next(_ok_variants(benches.get("bench_resnet50")), None)
        ratio_source = (f"bench_resnet50, {variant['precision']} {variant['mode']} (no fp16 figure)" if variant
                        else source)
    for key, name in (("speed_ratio", "speed"), ("memory_ratio", "memory"), ("size_ratio", "size")):
        if variant is None:
            result[key] = (None, ratio_source)
        else:
            note = f"; memory is {variant['results']['multitask'].get('memory_kind')}" if name == "memory" else ""
            result[key] = (variant["ratios"][name], ratio_source + note)
    multitask = replay.get("multitask")
    why_replay = (steps.get("replay") or {}).get("reason") or "the replay step did not run"
    row = _fixed_rate(multitask, 30.0)
    if row is None:
        result["node_30hz_p50_ms"] = result["node_30hz_drops"] = (None, "no 30 Hz run in the replay report: " + why_replay)
    else:
        result["node_30hz_p50_ms"] = (row["latency_ms"]["p50"], f"replay multitask graph, 30 Hz for "
                                      f"{row.get('published')} frames, {row.get('answered')} with both outputs")
        drops = (row.get("dropped") or 0) + (row.get("lost") or 0)
        result["node_30hz_drops"] = (drops, f"dropped {row.get('dropped')}, lost {row.get('lost')}, "
                                     f"answered {row.get('answered')} of {row.get('published')}")
    if multitask is None:
        result["node_non_network_ms"] = (None, "no multitask replay report: " + why_replay)
    else:
        result["node_non_network_ms"] = node_non_network_ms(multitask)
    return result


def judge(value, comparison: str, threshold: float, dry: bool) -> str:
    if value is None:
        return "MISSING"
    if dry:
        return "not judged (CPU dry run)"
    passed = value <= threshold if comparison == "<=" else value >= threshold
    return "PASS" if passed else "FAIL"


def _bench_markdown(benches: dict[str, dict], work: Path) -> str:
    parts = ["# Multitask vs naive: every bench run of the GPU check\n"]
    for run in BENCH_RUNS:
        text = (work / run / "bench.md")
        if text.exists():
            body = text.read_text().split("\n", 2)[-1]
            parts.append(f"## {run}\n\n{body}")
    return "\n".join(parts) if len(parts) > 1 else parts[0] + "\nNo bench run finished.\n"


def _replay_markdown(work: Path) -> str:
    text = work / "replay" / "compare.md"
    if not text.exists():
        return "# Replay through ROS 2\n\nThe replay step wrote no comparison (see summary.md and logs.txt).\n"
    return "\n".join(line for line in text.read_text().splitlines() if not line.startswith("![")) + "\n"


def _trim_report(report: dict | None) -> dict | None:
    if report is None:
        return None
    return {k: v for k, v in report.items() if k not in ("latencies_ms", "overlays", "plots", "output_bag")}


def _logs(work: Path) -> str:
    chunks = []
    for log in sorted((work / "logs").glob("*.log")):
        data = log.read_bytes()
        cut = len(data) > LOG_TAIL_BYTES
        text = data[-LOG_TAIL_BYTES:].decode(errors="replace")
        chunks.append(f"===== {log.stem}{' (last %d bytes)' % LOG_TAIL_BYTES if cut else ''} =====\n{text}\n")
    return "".join(chunks) or "no logs\n"


def summary_markdown(results: dict) -> str:
    dry = results["dry"]
    machine = results["machine"]
    lines = ["# GPU check (issue 10)", ""]
    if dry:
        lines += ["**Dry run on the CPU** (GPU_CHECK_DRY=1): tiny iteration counts, the dev environment; it proves the "
                  "script's wiring. Its figures are CPU figures of toy sizes, not the GPU targets' figures.", ""]
    lines += [f"Machine: {machine['gpu'] or 'no GPU'}; {machine['cpu_count']} CPUs; Python {machine['python']}; "
              f"{machine['platform']}.", ""]
    for line in results["budget_lines"]:
        lines.append(f"- {line}")
    lines += ["", "## Targets", "", "| target | figure | verdict | where from |", "|---|---:|---|---|"]
    for target in results["targets"]:
        unit = target["unit"]
        digits = {"x": 3, "frames": 0}.get(unit, 2)  # ratios to 3 places: 1.646 is not 1.65
        figure = f"{_fmt(target['value'], digits)} {unit} ({target['comparison']} {target['threshold']:g})"
        lines.append(f"| {target['what']} | {figure} | {target['verdict']} | {target['source']} |")
    lines += ["", "## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for step in results["steps"]:
        lines.append(f"| {step['step']} | {step['status']} | {step['seconds']:.0f} | {step.get('reason') or ''} |")
    tests = results["cuda_tests"]
    if tests:
        counts = {}
        for test in tests:
            counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
        lines += ["", "## CUDA tests", "", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), "",
                  "| test | outcome | message |", "|---|---|---|"]
        for test in tests:
            message = (test["message"] or "").replace("|", "/").replace("\n", " ")[:200]
            lines.append(f"| {test['test']} | {test['outcome']} | {message} |")
    compare = (results["replay"] or {}).get("compare")
    if compare:
        ratios = compare.get("ratios") or {}
        lines += ["", "## Replay through ROS 2 at the shared budget (replay.md has the tables)", "",
                  f"Multitask gain (naive ÷ multitask; throughput multitask ÷ naive): lockstep latency "
                  f"{_fmt(ratios.get('speed'))}x, network time {_fmt(ratios.get('inference'))}x, peak throughput "
                  f"{_fmt(ratios.get('throughput'))}x, memory {_fmt(ratios.get('memory'))}x, size {_fmt(ratios.get('size'))}x."]
    lines += ["", "Files: summary.md, results.json, bench.md, replay.md, logs.txt."]
    return "\n".join(lines) + "\n"


def build_results(work: Path, dry: bool, budget_s: float) -> dict:
    steps = read_steps(work)
    by_step = {s["step"]: s for s in steps}
    benches = {run: _load(work / run / "bench.json") for run in BENCH_RUNS}
    benches = {k: v for k, v in benches.items() if v}
    replay = {"compare": _load(work / "replay" / "compare.json"),
              "multitask": _load(work / "replay" / "multitask" / "report.json"),
              "naive": _load(work / "replay" / "naive" / "report.json")}
    installed = _load(work / "installed.json") or {}
    found = figures(benches, replay, by_step)
    targets = []
    for key, what, comparison, threshold, unit in TARGETS:
        value, source = found.get(key, (None, "not measured"))
        targets.append({"key": key, "what": what, "comparison": comparison, "threshold": threshold, "unit": unit,
                        "value": value if _finite(value) else None, "source": source,
                        "verdict": judge(value if _finite(value) else None, comparison, threshold, dry)})
    budget_lines = [f"Run budget: {budget_s:g} s in all; each step within what was left."]
    for run, bench in benches.items():
        budget_lines.append(f"{run}: " + bench["budget"].get("line", "(no budget line)"))
    if replay["compare"] and replay["compare"].get("budget"):
        budget_lines.append("replay: " + replay["compare"]["budget"].get("line", ""))
    gpu = installed.get("gpu")
    return {
        "dry": dry,
        "machine": {"gpu": gpu, "cuda": installed.get("cuda"), "cpu_count": os.cpu_count(),
                    "python": installed.get("python") or platform.python_version(), "platform": platform.platform()},
        "budget_lines": budget_lines,
        "targets": targets,
        "steps": steps,
        "cuda_tests": read_junit(work / "cuda_tests.xml"),
        "installed": installed,
        "links": _load(work / "links.json"),
        "bench": benches,
        "replay": {"compare": replay["compare"], "multitask": _trim_report(replay["multitask"]),
                   "naive": _trim_report(replay["naive"])},
    }


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dry", default="0")
    parser.add_argument("--budget-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = build_results(args.work, args.dry == "1", args.budget_s)
    _write(args.out / "results.json", json.dumps(_json_safe(results), indent=1, allow_nan=False) + "\n")
    _write(args.out / "summary.md", summary_markdown(results))
    _write(args.out / "bench.md", _bench_markdown(results["bench"], args.work))
    _write(args.out / "replay.md", _replay_markdown(args.work))
    _write(args.out / "logs.txt", _logs(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
