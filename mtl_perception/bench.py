"""Table II side by side: the multitask model against the naive pair of single-task models.

Each requested variant (engine: ``torch`` with precision × mode: ``eager``, ``cuda_graph``,
``compiled``; ``onnxruntime`` fp32; ``int8``, onnxruntime on the CPU) runs both
sides at an equal budget: the same device, the same frames in the same order, the same
detection postprocess and the same number of torch CPU threads. Each side has its own worker
process, so memory figures don't mix; the two workers take turns, one variant at a time, and
release everything between variants. Memory is CUDA peak allocation on a GPU (the peak is
reset for each variant) and resident-memory growth on the CPU. The naive pair runs the
segmentation model and then the detection model on each frame, both through
:class:`~mtl_perception.predictor.Predictor` (preprocess, network and postprocess included),
exactly as the multitask model does.

Writes ``<out>/bench.json`` (the budget, and per variant both sides' figures and ``ratios``:
``speed``, ``memory``, ``size``, ``parameters``, each naive ÷ multitask) and ``<out>/bench.md``.
With ``--engines`` the report adds the engines side by side per network (network p50/p90, RSS,
file size, held-out accuracy; :mod:`mtl_perception.bench_engines`) and the issue's engine
targets, each PASS or FAIL, with the machine (CPU, flags, load). onnxruntime models are
exported (int8: quantized) into the engine cache by a throwaway process before the timed
workers start, so no export counts in a worker's memory or setup time.
Both are rewritten after every variant, so a run stopped early keeps what it measured.
Exit status: 0 every variant ran or was not applicable here (skipped, with the reason);
1 a variant failed; 2 bad arguments or checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import math
import os
import resource
import selectors
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .evaluation.report import latency_summary, ratio, write_json
from .exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from .machine import cpu_name

SIDES = ("multitask", "naive")
MODES = ("eager", "cuda_graph", "compiled")
PRECISIONS = ("fp32", "fp16", "bf16")
ENGINES = ("torch", "onnxruntime", "int8")
RESULT_PREFIX = "BENCH_RESULT "


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_frames(count: int, frame_size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """The frames every side and variant sees: ``count`` [H, W, 3] uint8 images from one seed."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*frame_size, 3), dtype=np.uint8) for _ in range(count)]


def _skip_reason(mode: str, precision: str, device_type: str, engine: str = "torch") -> str | None:
    from .predictor import Predictor

    if engine == "int8" and device_type != "cpu":
        return "int8 runs with onnxruntime on the CPU only"
    if engine != "torch":
        return None
    if mode == "cuda_graph" and device_type != "cuda":
        return "cuda_graph needs a CUDA device"
    if precision == "fp16" and device_type != "cuda":
        return "fp16 has no CPU path (the Predictor would run fp32)"
    if mode == "compiled" and "compile" not in inspect.signature(Predictor).parameters:
        return "this Predictor has no compile option"
    return None


def run_variant(checkpoints: list[str], spec: dict) -> dict:
    """Measure one side of one variant in this process; everything is released afterwards.

    ``spec``: device, precision, mode, input_size, frame_size, frames, iters, warmup,
    compile_mode; engine (``torch``, ``onnxruntime``, ``int8``), calibration (int8: a bag or
    image folder; None = the demo models' training tiles), engine_cache_dir, accuracy (score
    the held-out aerial tiles afterwards). Returns the figures with ``status`` ``ok``,
    ``skipped`` (and ``reason``) or ``failed`` (and ``error``).
    """
    import torch

    from .predictor import Predictor, resolve_device

    device = resolve_device(spec["device"])
    use_cuda = device.type == "cuda"
    engine = spec.get("engine", "torch")
    base = {"engine": engine, "precision": spec["precision"], "mode": spec["mode"], "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if use_cuda else cpu_name()}
    reason = _skip_reason(spec["mode"], spec["precision"], device.type, engine)
    if reason:
        return {**base, "status": "skipped", "reason": reason}
    frames = bench_frames(spec["frames"], tuple(spec["frame_size"]))
    options = predictor_options(spec)
    predictors = []
    try:
        gc.collect()
        if use_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            baseline_allocated = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        baseline_rss = peak_rss = _rss_mb()
        maxrss_before = _max_rss_mb()
        start = time.perf_counter()
        predictors = [Predictor(path, **options) for path in checkpoints]
        setup_s = time.perf_counter() - start
        latencies, stages = [], {"preprocess_ms": [], "inference_ms": [], "postprocess_ms": []}
        stage_inference = {i: [] for i in range(len(predictors))}
        for index in range(spec["iters"]):
            image = frames[index % len(frames)]
            start = time.perf_counter()
            results = [predictor(image) for predictor in predictors]
            latencies.append((time.perf_counter() - start) * 1e3)
            for key in stages:
                stages[key].append(sum(getattr(r.timings, key) for r in results))
            for i, result in enumerate(results):
                stage_inference[i].append(result.timings.inference_ms)
            peak_rss = max(peak_rss, _rss_mb())
        network = [sum(r) for r in zip(*(stage_inference[i] for i in range(len(predictors))))]
        figures = {
            **base, "status": "ok",
            "precision": predictors[0].precision,
            "execution_provider": predictors[0].engine.execution_provider,
            "engine_line": predictors[0].engine.describe(),
            "network_ms": latency_summary(network),
            "file_mb": sum(_engine_file(p, path).stat().st_size for p, path in zip(predictors, checkpoints)) / 2**20,
            "engine_files": [str(_engine_file(p, path)) for p, path in zip(predictors, checkpoints)],
            "compile_mode": getattr(predictors[0], "compile_mode", None),
            "input_size": list(predictors[0].input_size),
            "frame_size": list(spec["frame_size"]),
            "frames": len(frames),
            "iters": spec["iters"],
            "latency_ms": latency_summary(latencies),
            "first_frame_ms": latencies[0],
            "stage_ms_p50": {k: latency_summary(v)["p50"] for k, v in stages.items()},
            "setup_s": setup_s,
            "compile_s": sum(getattr(p, "compile_s", 0.0) for p in predictors),
            "warmup_s": sum(getattr(p, "warmup_s", 0.0) for p in predictors),
            "parameters": int(sum(p.parameter_count for p in predictors)),
            "checkpoint_mb": sum(Path(p).stat().st_size for p in checkpoints) / 2**20,
        }
        if use_cuda:
            figures["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            figures["memory_mb"] = figures["cuda_max_allocated_mb"] - baseline_allocated / 2**20
            figures["memory_kind"] = "cuda_max_allocated"
        else:
            # The process's all-time peak counts when it was reached in this variant (transients
            # of loading included); otherwise the RSS sampled after each frame.
            maxrss = _max_rss_mb()
            figures["memory_mb"] = (max(maxrss, peak_rss) if maxrss > maxrss_before else peak_rss) - baseline_rss
            figures["memory_kind"] = "rss_growth"
            figures["rss_mb"] = peak_rss
        if spec.get("accuracy"):
            from .bench_engines import heldout_accuracy

            figures["accuracy"] = heldout_accuracy(predictors)
        return figures
    except Exception as exc:  # one variant's failure is a figure of the report, not the end of it
        return {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        for predictor in predictors:
            predictor.release()
        predictors.clear()
        if spec["mode"] == "compiled":
            torch._dynamo.reset()
        gc.collect()
        if use_cuda:
            torch.cuda.empty_cache()


def predictor_options(spec: dict) -> dict:
    """Predictor arguments of a variant ``spec`` (see :func:`run_variant`)."""
    engine = spec.get("engine", "torch")
    options = {"device": spec["device"], "precision": spec["precision"], "warmup": spec["warmup"],
               "input_size": tuple(spec["input_size"]) if spec.get("input_size") else None,
               "backend": "torch" if engine == "torch" else "onnxruntime",
               "engine_cache_dir": spec.get("engine_cache_dir")}
    if engine == "torch":
        options["cuda_graph"] = spec["mode"] == "cuda_graph"
        if spec["mode"] == "compiled":
            options.update(compile=True, compile_mode=spec.get("compile_mode"))
    if engine == "int8":
        from .engines.calibration import aerial_training_set, calibration_set

        frames = spec.get("calibration_frames") or 32
        options["calibration"] = (calibration_set(spec["calibration"], frames) if spec.get("calibration")
                                  else aerial_training_set(frames))
    return options


def _engine_file(predictor, checkpoint: str) -> Path:
    """The file the engine runs: the ONNX model (onnxruntime) or the checkpoint (torch)."""
    return Path(predictor.engine.model_file or checkpoint)


def prepare_engines(checkpoints: list[str], spec: dict) -> dict:
    """Build the variant's engine files into the cache (export, quantization), untimed."""
    from .predictor import Predictor

    try:
        start = time.perf_counter()
        predictors = [Predictor(path, **{**predictor_options(spec), "warmup": 0}) for path in checkpoints]
        built = [p.engine_cache.built for p in predictors if p.engine_cache is not None]
        report = {"status": "ok", "files": [p.engine.model_file for p in predictors], "built": built,
                  "seconds": time.perf_counter() - start}
        if spec.get("engine") == "int8":
            from .engines.quantize import calibration_report

            report["calibration"] = [calibration_report(p.engine.model_file) for p in predictors]
        return report
    except Exception as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _worker_loop(checkpoints: list[str], threads: int) -> int:
    """Read one JSON variant spec per stdin line, answer one ``BENCH_RESULT`` line each
    (a spec with ``prepare`` builds the engine files instead of measuring)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    for line in sys.stdin:
        if line.strip():
            spec = json.loads(line)
            figures = prepare_engines(checkpoints, spec) if spec.get("prepare") else run_variant(checkpoints, spec)
            print(RESULT_PREFIX + json.dumps(figures), flush=True)
    return 0


class _Worker:
    """One side's worker process, restarted after a crash or a timeout."""

    def __init__(self, side: str, checkpoints: list[str], threads: int, cpus: tuple[int, ...] | None = None):
        self.side, self.checkpoints, self.threads, self.cpus = side, checkpoints, threads, cpus
        self.process = None

    def _start(self) -> None:
        command = [sys.executable, "-m", "mtl_perception.bench", "--worker", self.side, "--threads", str(self.threads),
                   "--worker-checkpoints", *self.checkpoints]
        cpus = self.cpus
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def run(self, spec: dict, timeout_s: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s (worker stopped)"}
                line = self.process.stdout.readline()
                if not line:
                    code = self.process.wait()
                    self.process = None
                    return {"status": "failed", "error": f"the worker exited with status {code} (see its stderr)"}
                if line.startswith(RESULT_PREFIX):
                    return json.loads(line[len(RESULT_PREFIX):])
                sys.stdout.write(line)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.stop()
        self.process = None


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


def compare(results: dict[str, dict]) -> dict:
    """Ratios naive ÷ multitask (bigger means the multitask model wins)."""
    multi, naive = results["multitask"], results["naive"]
    return {
        "speed": ratio(naive["latency_ms"]["p50"], multi["latency_ms"]["p50"]),
        "memory": ratio(naive["memory_mb"], multi["memory_mb"]),
        "size": ratio(naive["checkpoint_mb"], multi["checkpoint_mb"]),
        "parameters": ratio(naive["parameters"], multi["parameters"]),
    }


def _variant_status(results: dict[str, dict]) -> tuple[str, str | None]:
    statuses = {side: r["status"] for side, r in results.items()}
    if all(s == "ok" for s in statuses.values()):
        return "ok", None
    notes = {side: r.get("error") or r.get("reason") for side, r in results.items() if r["status"] != "ok"}
    status = "failed" if "failed" in statuses.values() else "skipped"
    if len(set(notes.values())) == 1 and len(notes) == len(results):
        return status, next(iter(notes.values()))
    return status, "; ".join(f"{side}: {note}" for side, note in notes.items())


def budget_line(budget: dict) -> str:
    threads = budget["torch_threads"] or "torch's default"
    pinned = f", pinned to CPU {','.join(map(str, budget['cpus']))}" if budget.get("cpus") else ""
    return (f"Budget: both sides on {budget['device_name']} ({budget['device']}), the same {budget['frames']} frames of "
            f"{budget['frame_size'][0]}x{budget['frame_size'][1]} ({budget['iters']} timed calls after "
            f"{budget['warmup']} warm-up), the same postprocess, CPU threads {threads} (torch and onnxruntime "
            f"intra-op){pinned}; one worker process per side, variants in turn.")


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _setup(figures: dict) -> str:
    """Start-up seconds; for compiled variants with the compile time in brackets."""
    compiled = f" ({_fmt(figures['compile_s'], 1)} compile)" if figures.get("compile_s") else ""
    return _fmt(figures["setup_s"], 1) + compiled


def markdown_table(report: dict) -> str:
    lines = [report["budget"]["line"], "",
             f"Trunk {report['trunk']}; input {report['input_size'][0]}x{report['input_size'][1]}.", "",
             "| engine | precision | mode | multitask p50 (ms) | naive p50 (ms) | speed | multitask memory (MB) | "
             "naive memory (MB) | memory | setup s (multitask / naive) | status |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    memory_kinds = set()
    sizes = None
    for variant in report["variants"]:
        m, n = variant["results"].get("multitask", {}), variant["results"].get("naive", {})
        if variant["status"] == "ok":
            memory_kinds.add(m["memory_kind"])
            r = variant["ratios"]
            sizes = sizes or (m, n, r)
            lines.append(f"| {variant.get('engine', 'torch')} | {variant['precision']} | {variant['mode']} | {_fmt(m['latency_ms']['p50'])} | "
                         f"{_fmt(n['latency_ms']['p50'])} | {_fmt(r['speed'])}x | {_fmt(m['memory_mb'], 1)} | "
                         f"{_fmt(n['memory_mb'], 1)} | {_fmt(r['memory'])}x | {_setup(m)} / {_setup(n)} | ok |")
        else:
            lines.append(f"| {variant.get('engine', 'torch')} | {variant['precision']} | {variant['mode']} | | | | | | | | "
                         f"{variant['status']}: {variant['reason']} |")
    lines.append("")
    labels = {"cuda_max_allocated": "CUDA peak allocated, reset per variant",
              "rss_growth": "resident-memory growth of the worker during the variant (CPU; a worker's later "
                            "variants reuse memory its earlier ones freed, so the first variant's figure is the full one)"}
    if memory_kinds:
        lines.append("Memory: " + "; ".join(labels[k] for k in sorted(memory_kinds)) + ".")
    if sizes:
        m, n, r = sizes
        lines.append(f"Checkpoints: multitask {m['checkpoint_mb']:.1f} MB, naive {n['checkpoint_mb']:.1f} MB "
                     f"({_fmt(r['size'], 3)}x); parameters {m['parameters'] / 1e6:.1f} M vs {n['parameters'] / 1e6:.1f} M "
                     f"({_fmt(r['parameters'], 3)}x).")
    return "\n".join(lines) + "\n"


def _prepare(engine: str, spec: dict, groups: dict, args) -> dict[str, dict]:
    """onnxruntime engines: export (and quantize) each side's models into the engine cache in a
    throwaway process, so the timed workers only load them."""
    if engine == "torch" or _skip_reason(spec["mode"], spec["precision"], _device_type(spec["device"]), engine):
        return {side: {"status": "ok"} for side in SIDES}
    prepared = {}
    for side in SIDES:
        worker = _Worker(side, groups[side], args.threads)
        try:
            prepared[side] = worker.run({**spec, "prepare": True}, args.variant_timeout)
        finally:
            worker.close()
    return prepared


def _device_type(device: str) -> str:
    from .predictor import resolve_device

    return resolve_device(device).type


def _write(out: Path, report: dict) -> None:
    write_json(out / "bench.json", report)
    text = "# Multitask vs naive (Table II)\n\n" + markdown_table(report)
    if report.get("engines", ["torch"]) != ["torch"]:
        from .bench_engines import engines_markdown

        text += "\n" + engines_markdown(report)
    write_text_atomic(out / "bench.md", text)


def _budget(device: str, frame_size, frames: int, iters: int, warmup: int, threads: int,
            cpus: tuple[int, ...] | None = None) -> dict:
    import torch

    from .postprocess import DetectionParams
    from .predictor import resolve_device

    resolved = resolve_device(device)
    name = torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else cpu_name()
    budget = {"device": str(resolved), "device_name": name, "frames": frames, "frame_size": list(frame_size),
              "iters": iters, "warmup": warmup, "torch_threads": threads, "cpus": list(cpus) if cpus else None,
              "postprocess": dataclasses.asdict(DetectionParams()),
              "isolation": "one worker process per side; variants in turn; everything released between variants"}
    budget["line"] = budget_line(budget)
    return budget


def _engine_list(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"engines must be a comma-separated list of {', '.join(ENGINES)}, got {text!r}")
    return list(dict.fromkeys(engines))


def _cpus(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if text == "last":
        return (allowed[-1],)
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    outside = sorted(cpus - set(allowed))
    if outside:
        raise ValueError(f"--cpus {text}: CPUs {outside} are not available (allowed: {allowed})")
    return tuple(sorted(cpus))


def variant_plan(engines: list[str], precisions: list[str], modes: list[str]) -> list[tuple[str, str, str]]:
    """(engine, precision, mode) of every variant, in order: torch's precision x mode, then
    onnxruntime fp32, then int8."""
    plan = []
    for engine in engines:
        if engine == "torch":
            plan += [("torch", precision, mode) for precision in precisions for mode in modes]
        else:
            plan.append((engine, "int8" if engine == "int8" else "fp32", "onnxruntime"))
    return plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl-bench", description="Multitask vs naive pair: latency, memory, size (Table II).")
    parser.add_argument("--trunk", default="resnet50", help="trunk for untrained models (ignored with --checkpoints)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="network input size (default 512 512, or the checkpoints')")
    parser.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=(480, 640), help="camera frame size")
    parser.add_argument("--checkpoints", nargs=3, metavar=("MULTITASK", "SEGMENTATION", "DETECTION"),
                        help="trained checkpoints to compare (default: untrained models of --trunk)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS, help="one or more")
    parser.add_argument("--mode", nargs="+", default=None, choices=MODES, help="one or more (default eager)")
    parser.add_argument("--cuda-graph", action="store_true", help="same as --mode cuda_graph")
    parser.add_argument("--compile-mode", help="torch.compile mode of the compiled variants (default: the Predictor's)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per side and variant")
    parser.add_argument("--frames", type=int, default=8, help="distinct frames, cycled")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of each side, torch's and onnxruntime's intra-op (0: the engines' default)")
    parser.add_argument("--engines", type=_engine_list, default=["torch"],
                        help="comma-separated engines side by side: torch (the --precision x --mode variants), "
                             "onnxruntime (fp32), int8 (onnxruntime, CPU); default torch")
    parser.add_argument("--cpus", help="pin both workers to these CPUs (e.g. 1 or 2-3); 'last': the last allowed CPU")
    parser.add_argument("--calibration", help="int8: calibration rosbag or image folder "
                                              "(default: the demo models' training tiles)")
    parser.add_argument("--calibration-frames", type=int, default=32, help="int8: calibration frames")
    parser.add_argument("--accuracy", action=argparse.BooleanOptionalAction, default=None,
                        help="score each engine on the held-out aerial tiles (mIoU, tree AP50); default: with --engines "
                             "other than torch and --checkpoints")
    parser.add_argument("--variant-timeout", type=float, default=600.0, help="seconds one side of one variant may take")
    parser.add_argument("--out", default="bench_output")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-checkpoints", nargs="+", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_loop(args.worker_checkpoints, args.threads)
    if args.iters < 1 or args.frames < 1 or args.warmup < 0:
        parser.error("--iters and --frames must be >= 1, --warmup >= 0")
    modes = list(dict.fromkeys((args.mode or ([] if args.cuda_graph else ["eager"])) + (["cuda_graph"] if args.cuda_graph else [])))
    out = Path(args.out)
    try:
        cpus = _cpus(args.cpus)
        budget = _budget(args.device, args.frame_size, args.frames, args.iters, args.warmup, args.threads, cpus)
        if args.checkpoints:
            missing = [p for p in args.checkpoints if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"checkpoint(s) not found: {', '.join(missing)}")
            groups = {"multitask": [args.checkpoints[0]], "naive": list(args.checkpoints[1:])}
            trunk = "from checkpoints"
        else:
            out.mkdir(parents=True, exist_ok=True)
            groups = make_random_checkpoints(out, args.trunk, tuple(args.input_size or (512, 512)))
            trunk = args.trunk
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"mtl-bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .machine import describe_machine

    accuracy = args.accuracy if args.accuracy is not None else bool(args.checkpoints) and args.engines != ["torch"]
    report = {"trunk": trunk, "input_size": list(args.input_size or (512, 512)), "budget": budget,
              "checkpoints": groups, "engines": args.engines, "variants": [], "complete": False,
              "machine": describe_machine()}
    workers = {side: _Worker(side, groups[side], args.threads, cpus) for side in SIDES}
    try:
        for engine, precision, mode in variant_plan(args.engines, args.precision, modes):
            spec = {"device": args.device, "precision": precision, "mode": mode, "frame_size": list(args.frame_size),
                    "frames": args.frames, "iters": args.iters, "warmup": args.warmup,
                    "input_size": args.input_size, "compile_mode": args.compile_mode, "engine": engine,
                    "calibration": args.calibration, "calibration_frames": args.calibration_frames,
                    "accuracy": accuracy}
            print(f"[bench] {engine} {precision} {mode}", flush=True)
            prepared = _prepare(engine, spec, groups, args)
            results = {side: (workers[side].run(spec, args.variant_timeout) if prepared[side]["status"] == "ok"
                              else {"engine": engine, "precision": precision, "mode": mode, **prepared[side]})
                       for side in SIDES}
            status, reason = _variant_status(results)
            variant = {"engine": engine, "precision": precision, "mode": mode, "status": status, "reason": reason,
                       "results": results, "prepared": prepared}
            if status == "ok":
                variant["ratios"] = compare(results)
                report["input_size"] = results["multitask"]["input_size"]
            report["variants"].append(variant)
            _write(out, report)
    finally:
        for worker in workers.values():
            worker.close()
    report["machine_end"] = describe_machine()
    report["complete"] = True
    _write(out, report)
    print(markdown_table(report))
    if report["engines"] != ["torch"]:
        from .bench_engines import engines_markdown

        print(engines_markdown(report))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return EXIT_FAILED if any(v["status"] == "failed" for v in report["variants"]) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
