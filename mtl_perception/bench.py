"""Table II side by side: the multitask model against the naive pair of single-task models.

Both configurations use the same trunk, input size, device and precision, and run in
the same invocation. Each runs in its own worker process so that memory figures don't
mix: CUDA peak allocation on a GPU, growth of peak resident memory on the CPU. The
naive pair runs the segmentation model and then the detection model on each frame,
both through :class:`~mtl_perception.predictor.Predictor` (preprocess, network and
postprocess included), exactly as the multitask model does.

Writes ``<out>/bench.json`` (raw figures plus ``ratios.speed``, ``ratios.memory`` and
``ratios.size``, each naive ÷ multitask) and ``<out>/bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .evaluation.report import latency_summary

VARIANTS = ("multitask", "naive")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_worker(variant: str, checkpoints: list[str], device: str, precision: str, input_size: list[int] | None,
               frame_size: tuple[int, int], iters: int, warmup: int, cuda_graph: bool, threads: int) -> dict:
    """Measure one configuration in this process (called in a fresh subprocess)."""
    import torch

    from .predictor import Predictor

    if threads:
        torch.set_num_threads(threads)
    baseline_rss = _rss_mb()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.reset_peak_memory_stats()
    size = tuple(input_size) if input_size else None
    predictors = [Predictor(path, device=device, precision=precision, input_size=size, warmup=warmup,
                            cuda_graph=cuda_graph) for path in checkpoints]
    image = np.random.default_rng(0).integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    latencies, stages = [], {"preprocess_ms": [], "inference_ms": [], "postprocess_ms": []}
    for _ in range(iters):
        start = time.perf_counter()
        results = [predictor(image) for predictor in predictors]
        latencies.append((time.perf_counter() - start) * 1e3)
        for key in stages:
            stages[key].append(sum(getattr(r.timings, key) for r in results))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "variant": variant,
        "device": str(predictors[0].device),
        "device_name": torch.cuda.get_device_name(0) if use_cuda else _cpu_name(),
        "precision": predictors[0].precision,
        "input_size": list(predictors[0].input_size),
        "frame_size": list(frame_size),
        "iters": iters,
        "latency_ms": latency_summary(latencies),
        "stage_ms_p50": {k: latency_summary(v)["p50"] for k, v in stages.items()},
        "parameters": int(sum(sum(p.numel() for p in pr.model.parameters()) for pr in predictors)),
        "checkpoint_mb": sum(Path(p).stat().st_size for p in checkpoints) / 2**20,
        "rss_growth_mb": peak_rss_mb - baseline_rss,
    }
    if use_cuda:
        figures["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    figures["memory_mb"] = figures.get("cuda_max_allocated_mb", figures["rss_growth_mb"])
    figures["memory_kind"] = "cuda_max_allocated" if use_cuda else "rss_growth"
    return figures


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def make_random_checkpoints(out_dir: Path, trunk: str, input_size: tuple[int, int], seg_classes: int = 21,
                            det_classes: int = 20) -> dict[str, list[str]]:
    """Untrained multitask + single-task checkpoints of one architecture (speed, memory and size
    don't depend on the weights' values)."""
    import torch

    from .checkpoint import make_checkpoint, save_checkpoint
    from .models import ModelConfig, build_model, single_task_config

    torch.manual_seed(0)
    config = ModelConfig(trunk=trunk, input_size=input_size, num_seg_classes=seg_classes, num_det_classes=det_classes)
    names = {"segmentation": ["background"] + [f"class{i}" for i in range(1, seg_classes)],
             "detection": [f"class{i}" for i in range(det_classes)]}
    paths = {}
    for kind, cfg in (("multitask", config), ("segmentation", single_task_config(config, "segmentation")),
                      ("detection", single_task_config(config, "detection"))):
        model = build_model(cfg)
        path = out_dir / f"{kind}-{trunk}-{input_size[0]}x{input_size[1]}.pt"
        save_checkpoint(make_checkpoint(model, {t: names[t] for t in cfg.tasks}, {"name": f"{kind}-{trunk}-untrained"}), path)
        paths[kind] = str(path)
    return {"multitask": [paths["multitask"]], "naive": [paths["segmentation"], paths["detection"]]}


def _ratio(naive: float, multitask: float) -> float:
    return naive / multitask if multitask > 0 else float("nan")


def compare(results: dict[str, dict]) -> dict:
    """Ratios naive ÷ multitask (bigger means the multitask model wins)."""
    multi, naive = results["multitask"], results["naive"]
    return {
        "speed": _ratio(naive["latency_ms"]["p50"], multi["latency_ms"]["p50"]),
        "memory": _ratio(naive["memory_mb"], multi["memory_mb"]),
        "size": _ratio(naive["checkpoint_mb"], multi["checkpoint_mb"]),
        "parameters": _ratio(naive["parameters"], multi["parameters"]),
    }


def markdown_table(report: dict) -> str:
    m, n, r = report["results"]["multitask"], report["results"]["naive"], report["ratios"]
    memory_label = "GPU peak allocated (MB)" if m["memory_kind"] == "cuda_max_allocated" else "RSS growth (MB)"
    rows = [
        ("Latency p50 (ms)", m["latency_ms"]["p50"], n["latency_ms"]["p50"], r["speed"]),
        ("Latency p90 (ms)", m["latency_ms"]["p90"], n["latency_ms"]["p90"], n["latency_ms"]["p90"] / m["latency_ms"]["p90"]),
        (memory_label, m["memory_mb"], n["memory_mb"], r["memory"]),
        ("Checkpoint size (MB)", m["checkpoint_mb"], n["checkpoint_mb"], r["size"]),
        ("Parameters (M)", m["parameters"] / 1e6, n["parameters"] / 1e6, r["parameters"]),
    ]
    lines = [
        f"Device: {m['device_name']} ({m['device']}, {m['precision']}); trunk {report['trunk']}; "
        f"input {m['input_size'][0]}x{m['input_size'][1]}; frame {m['frame_size'][0]}x{m['frame_size'][1]}; {m['iters']} frames.",
        "",
        "| | multitask | naive (seg + det) | naive ÷ multitask |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {a:.2f} | {b:.2f} | {c:.2f}x |" for name, a, b, c in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtl-bench", description="Multitask vs naive pair: latency, memory, size (Table II).")
    parser.add_argument("--trunk", default="resnet50", help="trunk for untrained models (ignored with --checkpoints)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="network input size (default 512 512, or the checkpoints')")
    parser.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640), help="camera frame size")
    parser.add_argument("--checkpoints", nargs=3, metavar=("MULTITASK", "SEGMENTATION", "DETECTION"),
                        help="trained checkpoints to compare (default: untrained models of --trunk)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--cuda-graph", action="store_true")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default="bench_output")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-checkpoints", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        figures = run_worker(args.worker, args.worker_checkpoints, args.device, args.precision, args.input_size,
                             tuple(args.frame_size), args.iters, args.warmup, args.cuda_graph, args.threads)
        print("BENCH_RESULT " + json.dumps(figures))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoints:
        groups = {"multitask": [args.checkpoints[0]], "naive": list(args.checkpoints[1:])}
        trunk = "from checkpoints"
    else:
        size = tuple(args.input_size or (512, 512))
        groups = make_random_checkpoints(out, args.trunk, size)
        trunk = args.trunk
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, "-m", "mtl_perception.bench", "--worker", variant, "--worker-checkpoints", *groups[variant],
                   "--device", args.device, "--precision", args.precision, "--iters", str(args.iters),
                   "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--frame-size", *map(str, args.frame_size)]
        if args.input_size:
            command += ["--input-size", *map(str, args.input_size)]
        if args.cuda_graph:
            command.append("--cuda-graph")
        print(f"[bench] {variant}: {' + '.join(Path(p).name for p in groups[variant])}", flush=True)
        proc = subprocess.run(command, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"mtl-bench: error: the {variant} worker failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[variant] = json.loads(line[len("BENCH_RESULT "):])
    report = {"trunk": trunk, "device": results["multitask"]["device"], "device_name": results["multitask"]["device_name"],
              "input_size": results["multitask"]["input_size"], "results": results, "ratios": compare(results),
              "checkpoints": groups}
    table = markdown_table(report)
    write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "bench.md", "# Multitask vs naive (Table II)\n\n" + table)
    print(table)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
