"""Real-data learning report: does the pipeline learn on the packaged aerial samples, and is the
multitask network at least as accurate as its single-task twins?

Trains, with one recipe and one step budget, once per seed (``--seeds``, default 0,1):

* the naive pair: segmentation-only and detection-only networks, each fed exactly its task's
  share of the multitask batches;
* the multitask network (every batch interleaves deepforest tree tiles, detection only, with
  solaris building tiles, segmentation only), the control;
* ``multitask_teachers``: the multitask network again with that seed's single-task networks as
  frozen teachers (``distill.teachers``): each tile gets pseudo-labels for the task it lacks.

Every run validates on the ``val`` tiles (cut from the training images; the learning curves and
the best-checkpoint choice). The held-out tiles are scored once, at the end, on every run's last
checkpoint and on the untrained network (same initialisation, 0 steps): tree AP50 and building
IoU / mIoU, per seed, with the mean and spread over seeds per model.

    python -m mtl_perception.training.learn_report --out learn_output
    python -m mtl_perception.training.learn_report --out learn_output --checkpoints checkpoints

writes ``learn_output/learn_report.md`` and ``learn_report.json`` (config, steps, wall time,
metrics, teacher time), ``learning_curves.png`` (val tree AP50 and building IoU at every
evaluation of every run) and the runs under ``learn_output/runs/``; ``--publish DIR`` copies the
report as ``DIR/report.md``, ``report.json``, ``learning_curves.png`` (docs/learning).
``--checkpoints DIR`` replaces ``demo_multitask.pt``, ``demo_segmentation.pt`` and
``demo_detection.pt`` there only if the multitask+teachers mean beats the shipped multitask
model on both held-out figures; the seed shipped is the one with the better val score.

Beside the three runs, each ``--variant NAME:KEY=VALUE[,KEY=VALUE...]`` (default
:data:`DEFAULT_VARIANTS`) trains the multitask network once more with those overrides and
adds a row, e.g. the branches' normalisation (BatchNorm vs GroupNorm) under interleaving.
"""

from __future__ import annotations

import argparse
import multiprocessing
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import atomic_output, write_json_atomic, write_text_atomic
from ..metrics import json_safe
from .config import ConfigError, TrainConfig, apply_overrides, config_from_dict, load_config
from ..data.dataset_classes import dataset_class_names

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "train" / "demo_aerial.yaml"
RUNS = ("multitask", "segmentation", "detection")
MODELS = ("segmentation", "detection", "multitask", "multitask_teachers")
ROWS = (("untrained", "untrained (same init, 0 steps)"), ("multitask", "multitask"),
        ("multitask_teachers", "multitask + teachers"), ("segmentation", "segmentation only"),
        ("detection", "detection only"))
# Extra multitask runs (first seed only): name -> overrides, e.g. model.head_norm=group. None by
# default: the GroupNorm comparison is in docs/training.md.
DEFAULT_VARIANTS: dict[str, list[str]] = {}
DEFAULT_SEEDS = (0, 1)
CURVES_FILE = "learning_curves.png"
METRICS = ("tree_ap50_voc", "building_iou")


def table_row(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The report's columns from evaluation metrics (None where the model lacks the task)."""
    iou = metrics.get("seg_iou") or {}
    best = (metrics.get("det_per_class_best_f1") or {}).get("tree") or {}
    return json_safe({
        "tree_ap50_voc": metrics.get("det_voc_ap50"),
        "tree_ap50_coco": metrics.get("det_coco_ap50"),
        "tree_map_coco": metrics.get("det_coco_map"),
        "building_iou": iou.get("building"),
        "seg_miou": metrics.get("seg_miou"),
        "tree_best_f1": best.get("f1"),
        "tree_f1_threshold": best.get("score_threshold"),
    })


def with_task(config: TrainConfig, task: str, overrides: list[str] | None = None) -> TrainConfig:
    return config_from_dict(apply_overrides({**config.to_dict(), "task": task}, overrides or []))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``'NAME:KEY=VALUE,KEY=VALUE'`` -> (NAME, [KEY=VALUE, ...])."""
    name, sep, rest = text.partition(":")
    overrides = [item for item in rest.split(",") if item]
    if not sep or not name or not overrides or not all("=" in item for item in overrides):
        raise ConfigError(f"--variant must look like NAME:KEY=VALUE[,KEY=VALUE], got {text!r}")
    return name, overrides


def heldout_sources(config: TrainConfig) -> list[dict[str, Any]]:
    """The held-out counterparts of the recipe's ``data.val`` sources (``split: val`` ->
    ``split: heldout``; a source without a split is taken as it is)."""
    return [{**source, "split": "heldout"} if source.get("split") == "val" else dict(source)
            for source in config.data.val]


def _scoring_config(config: TrainConfig, task: str, sources: list[dict[str, Any]]) -> TrainConfig:
    data = config.to_dict()
    data.update(task=task, distill={})
    data["data"] = {**data["data"], "val": sources}
    return config_from_dict(data)


def heldout_metrics(config: TrainConfig, task: str, sources: list[dict[str, Any]], output_dir: Path,
                    checkpoint: Path | None = None) -> dict[str, Any]:
    """Metrics on ``sources`` (the held-out tiles) of ``checkpoint``'s weights, or of the
    untrained network (same initialisation) without one; the training's evaluation path."""
    from ..checkpoint import load_checkpoint
    from .trainer import Trainer

    trainer = Trainer(_scoring_config(config, task, sources), output_dir)
    if checkpoint is not None:
        trainer.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in load_checkpoint(checkpoint).state_dict.items()})
    return trainer.evaluate()


def train_run(config: TrainConfig, task: str, output_dir: Path, command: str = "",
              overrides: list[str] | None = None) -> dict[str, Any]:
    """Train ``config`` as ``task`` (plus ``overrides``); ``command`` (the report's) goes into the
    checkpoints' metadata."""
    from .trainer import Trainer

    label = ", ".join([f"task={task}", *(overrides or [])])
    trainer = Trainer(with_task(config, task, overrides), output_dir, command=f"{command} [{label}]".strip())
    summary = trainer.fit()
    summary["history"] = [{"step": h["step"], **table_row(h["metrics"])} for h in trainer.history]
    summary["num_parameters"] = sum(p.numel() for p in trainer.model.parameters())
    summary["train_sources"] = trainer.data.train_names
    summary["train_samples"] = [len(d) for d in trainer.data.train_dataset.datasets]
    summary["per_batch"] = {}
    for dataset, count in zip(trainer.data.train_dataset.datasets, trainer.data.samples_per_source):
        for labelled in dataset_class_names(dataset):
            summary["per_batch"][labelled] = summary["per_batch"].get(labelled, 0) + count
    summary["val_sources"] = trainer.data.val_names
    summary["val_samples"] = [len(d) for d in trainer.data.val_datasets]
    return summary


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _pool_worker_init(parent_pid: int) -> None:
    """Run in each spawned training process.

    * Its DataLoader workers fork from it (with the code it loaded) instead of being spawned
      anew every epoch from the files on disk.
    * On Linux it gets SIGTERM when the report process dies, however that dies (SIGKILL
      included): a pool worker otherwise outlives it and keeps training into the run folders.
    """
    multiprocessing.set_start_method("fork", force=True)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the report died before the prctl took effect
            os._exit(1)


def plot_learning_curves(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Held-out tree AP50 and building IoU against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, title) in zip(axes, (("tree_ap50_voc", "held-out tree AP50 (VOC)"),
                                       ("building_iou", "held-out building IoU"))):
        for name, run in runs.items():
            points = [(h["step"], h[key]) for h in run.get("history", []) if h.get(key) is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _f1_cell(row: dict[str, Any]) -> str:
    if row.get("tree_best_f1") is None:
        return "–"
    return f"{row['tree_best_f1']:.3f} (at {row['tree_f1_threshold']:.2f})"


# Targets of the demo model, held out (the report says whether each is met): the longer-term
# goal, and this recipe's floor for the multitask network with teachers.
TARGETS = {"tree_ap50_voc": 0.40, "building_iou": 0.50}
FLOORS = {"tree_ap50_voc": 0.35, "building_iou": 0.35}
LABELS = {"tree_ap50_voc": "tree AP50", "building_iou": "building IoU"}


def seed_summary(values: list[float | None]) -> dict[str, Any] | None:
    """``{"mean", "spread", "values"}`` of one figure over seeds; spread is half the range (the
    mean +- spread covers every seed). None when a seed lacks the figure."""
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return {"mean": sum(values) / len(values), "spread": (max(values) - min(values)) / 2, "values": list(values)}


def aggregate(heldout: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Per model of :data:`MODELS`: its seeds and, per figure it has, mean and spread over them."""
    models: dict[str, dict[str, Any]] = {}
    for model in MODELS:
        rows = [heldout.get(run_name(model, seed)) for seed in seeds]
        if any(row is None for row in rows):
            continue
        entry: dict[str, Any] = {"seeds": list(seeds)}
        for key in METRICS:
            summary = seed_summary([row.get(key) for row in rows])
            if summary is not None:
                entry[key] = summary
        models[model] = entry
    return models


def compare_means(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> str:
    """``at least`` / ``below``, or ``within noise`` when the spreads cover the difference."""
    if mine is None or theirs is None:
        return "n/a"
    difference = mine["mean"] - theirs["mean"]
    if abs(difference) <= mine["spread"] + theirs["spread"]:
        return "within noise"
    return "above" if difference > 0 else "below"


def target_lines(models: dict[str, dict[str, Any]], shipped: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines: the targets judged on the means over seeds."""
    teachers, control = models.get("multitask_teachers", {}), models.get("multitask", {})
    lines = ["Targets (held-out means over seeds; spread = half the range; \"within noise\" where the "
             "spreads cover the difference):", ""]
    for key, single in (("tree_ap50_voc", "detection"), ("building_iou", "segmentation")):
        verdict = compare_means(teachers.get(key), models.get(single, {}).get(key))
        lines.append(f"- multitask + teachers >= {single} only ({LABELS[key]}): {_mean(teachers.get(key))} vs "
                     f"{_mean(models.get(single, {}).get(key))}: "
                     + {"above": "met", "within noise": "within noise", "below": "NOT met"}.get(verdict, "n/a"))
    for key in METRICS:
        verdict = compare_means(teachers.get(key), control.get(key))
        lines.append(f"- multitask + teachers > multitask ({LABELS[key]}) by more than the spread: "
                     f"{_mean(teachers.get(key))} vs {_mean(control.get(key))}: "
                     + {"above": "met", "within noise": "within noise", "below": "NOT met (below)"}.get(verdict, "n/a"))
    for key in METRICS:
        value = (teachers.get(key) or {}).get("mean")
        lines.append(f"- multitask + teachers {LABELS[key]} >= {FLOORS[key]:.2f} (longer-term {TARGETS[key]:.2f}): "
                     f"{_fmt(value)}, {'met' if value is not None and value >= FLOORS[key] else 'NOT met'}")
    if shipped:
        lines.append(f"- the shipped multitask model before this report: tree AP50 {_fmt(shipped.get('tree_ap50_voc'))}, "
                     f"building IoU {_fmt(shipped.get('building_iou'))} (held out, the same scoring)")
    return lines


def _mean(summary: dict[str, Any] | None) -> str:
    return "–" if summary is None else f"{summary['mean']:.3f} ± {summary['spread']:.3f}"


def run_name(model: str, seed: int) -> str:
    return f"{model}_seed{seed}"


def report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(results key, table label) of every per-run row: the fixed rows per seed, then the variants."""
    rows = [("untrained", ROWS[0][1])]
    for key, label in ROWS[1:]:
        rows += [(run_name(key, seed), f"{label}, seed {seed}") for seed in report["seeds"]]
    return rows + [(name, f"multitask, {', '.join(overrides)}") for name, overrides in report.get("variants", {}).items()]


def _control_text(teacher: dict[str, Any]) -> str:
    steps = teacher.get("control_step_s") or []
    if not steps:
        return ""
    span = f"{min(steps):.0f}" if len(steps) == 1 else f"{min(steps):.0f}-{max(steps):.0f}"
    return (f"The multitask control's steps took {span} s per run; runs that share the machine do not get "
            "equal CPU, so the cost is read from the taught runs' own timers, not from a difference of wall times.")


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: means over seeds, every run, the targets, the curves, the set-up."""
    rows, models = report["results"], report["models"]
    teacher = report["teacher_time"]
    lines = [
        "# Learning report: multitask vs. single-task on real aerial samples",
        "",
        f"Generated by `{report['command']}` on {report['machine']} "
        f"({report['torch']}, {report['threads']} CPU threads per training, {report['jobs']} at a time).",
        "",
        "Splits: every model trains on the `fit` tiles and is validated (learning curves, best-checkpoint "
        f"choice) on the `val` tiles cut from the same training images ({report['val']['trees']}; "
        f"{report['val']['buildings']}), never on a pixel of the held-out tiles. The held-out tiles "
        f"({report['heldout']['trees']}; {report['heldout']['buildings']}) are scored once, here, on each "
        f"run's last checkpoint. Every model got the same recipe and {report['steps']} optimizer steps; each "
        f"multitask batch held {report['batch']['detection']} tree tiles and {report['batch']['segmentation']} "
        "building tiles, each single-task network the same tiles of its own task. The teachers of "
        "`multitask + teachers` are the single-task networks of the same seed.",
        "",
        "| model (held out, mean ± spread over seeds " + ", ".join(map(str, report["seeds"])) + ") | tree AP50 (VOC) | building IoU |",
        "|---|---|---|",
    ]
    for model in MODELS:
        entry = models.get(model)
        if entry:
            lines.append(f"| {dict(ROWS).get(model, model)} | {_mean(entry.get('tree_ap50_voc'))} | "
                         f"{_mean(entry.get('building_iou'))} |")
    lines += ["", *target_lines(models, report.get("shipped_before")), "",
              f"Teacher passes: {teacher['teacher_s']:.0f} s of {teacher['total_s']:.0f} s of the multitask + teachers "
              f"runs' steps ({100 * teacher['share']:.0f}% of the step time): the teachers add "
              f"{teacher['teacher_per_run_s']:.0f} s per run, {100 * teacher['extra_share']:+.0f}% on the student's own "
              f"{teacher['student_per_run_s']:.0f} s of steps. {_control_text(teacher)}", "",
              f"Checkpoints: {report.get('shipping', 'not asked for (--checkpoints)')}", "",
              "## Every run (held out)", "",
              "| run | tree AP50 (VOC) | tree AP50 (COCO) | tree mAP (COCO) | building IoU | mIoU | tree best F1 (at score) | train wall time |",
              "|---|---|---|---|---|---|---|---|"]
    for key, label in report_rows(report):
        row = rows.get(key)
        if row is None:
            continue
        wall = report["runs"].get(key, {}).get("wall_time_s")
        lines.append(f"| {label} | {_fmt(row['tree_ap50_voc'])} | {_fmt(row['tree_ap50_coco'])} | "
                     f"{_fmt(row['tree_map_coco'])} | {_fmt(row['building_iou'])} | {_fmt(row['seg_miou'])} | "
                     f"{_f1_cell(row)} | {'–' if wall is None else f'{wall:.0f} s'} |")
    lines += [
        "",
        "AP50 (VOC): all-point interpolated AP at IoU 0.5; COCO numbers from faster-coco-eval. "
        "IoU and mIoU (background + building) from one confusion matrix over the held-out pixels, "
        "at the original resolution. Best F1: the held-out score threshold with the highest F1 "
        "(VOC matching): a deployment threshold for the model (the node's `score_threshold`).",
        "",
        "These are CPU minutes of training on a few dozen tiles: the numbers show how the set-ups "
        "compare at this budget, not what the architecture reaches with full training.",
        "",
        f"![learning curves]({CURVES_FILE})",
        "",
        "Validation (`val` tiles) metrics at every evaluation of every run.",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(report["config"], sort_keys=False).rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _execute(jobs_args: dict[str, tuple], jobs: int) -> dict[str, dict[str, Any]]:
    if jobs > 1 and len(jobs_args) > 1:
        # Independent runs (own seeds and RNG state), so the result does not depend on ``jobs``.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_pool_worker_init, initargs=(os.getpid(),)) as pool:
            futures = {name: pool.submit(train_run, *args) for name, args in jobs_args.items()}
            return {name: future.result() for name, future in futures.items()}
    return {name: train_run(*args) for name, args in jobs_args.items()}


def teacher_time(runs: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """What the teachers cost, from the multitask + teachers runs' own timers.

    Returns ``teacher_s`` and ``total_s`` (teacher passes and all step time, summed over those
    runs), ``share`` (teacher ÷ step time), ``teacher_per_run_s`` and ``student_per_run_s`` (means
    per run), ``extra_share`` (teacher ÷ student step time: what the teachers add to training) and
    ``control_step_s`` (the multitask control's step time per run, shown for comparison only:
    runs that share the machine do not get equal CPU, so a difference of wall times is no measure).
    """
    taught = [runs[run_name("multitask_teachers", s)] for s in seeds if run_name("multitask_teachers", s) in runs]
    control = [runs[run_name("multitask", s)] for s in seeds if run_name("multitask", s) in runs]
    teacher = sum(r.get("teacher_s", 0.0) for r in taught)
    student = sum(r.get("student_step_s", 0.0) for r in taught)
    count = max(len(taught), 1)
    return {"teacher_s": teacher, "total_s": teacher + student,
            "share": teacher / (teacher + student) if teacher + student else 0.0,
            "teacher_per_run_s": teacher / count, "student_per_run_s": student / count,
            "extra_share": teacher / student if student else 0.0,
            "control_step_s": [r.get("student_step_s", 0.0) for r in control]}


def _tile_counts(run: dict[str, Any]) -> dict[str, str]:
    """Validation tiles per source of a run, trees and buildings apart (the report's split line)."""
    pairs = dict(zip(run["val_sources"], run["val_samples"]))
    return {"trees": ", ".join(f"{n}: {c} tiles" for n, c in pairs.items() if "deepforest" in n) or "none",
            "buildings": ", ".join(f"{n}: {c} tiles" for n, c in pairs.items() if "solaris" in n) or "none"}


def ship_checkpoints(checkpoints: Path, runs_dir: Path, report: dict[str, Any]) -> str:
    """Replace the demo checkpoints by this report's models if multitask + teachers beats the
    shipped multitask model on both held-out means (the seed with the better val score);
    returns what happened, for the report."""
    teachers = report["models"].get("multitask_teachers") or {}
    shipped = report.get("shipped_before")
    if shipped is not None:
        worse = [k for k in METRICS if k not in teachers or shipped.get(k) is None
                 or teachers[k]["mean"] <= shipped[k]]
        if worse:
            return ("kept: multitask + teachers does not beat the shipped multitask model on "
                    + ", ".join(f"{LABELS[k]} ({_mean(teachers.get(k))} vs {_fmt(shipped.get(k))})" for k in worse))
    seeds = report["seeds"]
    scores = {s: (report["runs"][run_name("multitask_teachers", s)]["final_metrics"] or {}).get("score") or 0.0
              for s in seeds}
    seed = max(seeds, key=lambda s: scores[s])
    checkpoints.mkdir(parents=True, exist_ok=True)
    for task, model in (("multitask", "multitask_teachers"), ("segmentation", "segmentation"), ("detection", "detection")):
        with atomic_output(checkpoints / f"demo_{task}.pt") as tmp:
            shutil.copyfile(runs_dir / run_name(model, seed) / "last.pt", tmp)
    return (f"replaced with seed {seed} (val score {scores[seed]:.3f}): demo_multitask.pt = multitask + teachers, "
            "demo_segmentation.pt and demo_detection.pt = its teachers")


def build_report(config: TrainConfig, out: Path, command: str, checkpoints: Path | None = None,
                 variants: dict[str, list[str]] | None = None, jobs: int = 1,
                 seeds: tuple[int, ...] = DEFAULT_SEEDS, publish: Path | None = None) -> dict[str, Any]:
    """Run everything and write ``learn_report.md`` / ``.json`` and the curves under ``out``.

    Args:
        variants: extra multitask runs (first seed), name -> overrides (default :data:`DEFAULT_VARIANTS`).
        jobs: trainings run at once, each in its own process.
        seeds: every model is trained once per seed (``train.seed``).
        publish: also copy the report there as ``report.md``, ``report.json`` and the curves.
    """
    variants = DEFAULT_VARIANTS if variants is None else variants
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("at least one seed is needed")
    taken = {key for key, _ in ROWS} | {run_name(key, s) for key, _ in ROWS for s in seeds}
    clash = sorted(set(variants) & taken)
    if clash:
        raise ConfigError(f"variant name {clash[0]!r} is taken by a fixed row")
    for overrides in variants.values():
        with_task(config, "multitask", overrides)  # an invalid override fails before any training
    heldout = heldout_sources(config)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    started = time.perf_counter()
    shipped = None
    if checkpoints is not None and (checkpoints / "demo_multitask.pt").is_file():
        shipped = table_row(heldout_metrics(config, "multitask", heldout, runs_dir / "shipped",
                                            checkpoints / "demo_multitask.pt"))
    untrained = heldout_metrics(config, "multitask", heldout, runs_dir / "untrained")
    seeded = {s: [f"train.seed={s}"] for s in seeds}
    # The single-task runs (the teachers) first; the multitask control fills in beside them.
    first = {}
    for s in seeds:
        first.update({run_name(task, s): (config, task, runs_dir / run_name(task, s), command, seeded[s])
                      for task in ("segmentation", "detection", "multitask")})
    first.update({name: (config, "multitask", runs_dir / name, command, [*seeded[seeds[0]], *overrides])
                  for name, overrides in variants.items()})
    runs = _execute(first, jobs)
    taught = {}
    for s in seeds:
        teachers = [f"distill.teachers.{task}={runs_dir / run_name(task, s) / 'last.pt'}"
                    for task in ("segmentation", "detection")]
        taught[run_name("multitask_teachers", s)] = (config, "multitask", runs_dir / run_name("multitask_teachers", s),
                                                     command, [*seeded[s], *teachers])
    runs.update(_execute(taught, jobs))
    results = {"untrained": table_row(untrained)}
    for name, run in runs.items():
        task = "multitask" if name.startswith("multitask") or name in variants else name.rsplit("_seed", 1)[0]
        results[name] = table_row(heldout_metrics(config, task, heldout, runs_dir / name / "heldout",
                                                  runs_dir / name / "last.pt"))
    control = runs[run_name("multitask", seeds[0])]
    report = {
        "command": command,
        "machine": f"{platform.machine()} {platform.system()}",
        "torch": f"torch {torch.__version__}",
        "threads": config.train.threads or torch.get_num_threads(),
        "jobs": jobs,
        "seeds": seeds,
        "steps": control["steps"],
        "batch": control["per_batch"],
        "val": _tile_counts(control),
        "heldout": {"trees": ", ".join(f"{s['type']} {s.get('split', '')}" for s in heldout if "deepforest" in s["type"])
                    or "none",
                    "buildings": ", ".join(f"{s['type']} {s.get('split', '')}" for s in heldout if "solaris" in s["type"])
                    or "none"},
        "results": results,
        "models": aggregate(results, seeds),
        "shipped_before": shipped,
        "teacher_time": teacher_time(runs, seeds),
        "variants": {name: list(overrides) for name, overrides in variants.items()},
        "untrained_metrics": json_safe(untrained),
        "runs": {name: json_safe({k: run.get(k) for k in ("steps", "wall_time_s", "epochs", "final_metrics", "history",
                                                           "num_parameters", "train_sources", "train_samples", "per_batch",
                                                           "val_sources", "val_samples", "output_dir", "teacher_s",
                                                           "student_step_s", "teachers")})
                 for name, run in runs.items()},
        "config": config.to_dict(),
    }
    if checkpoints is not None:
        report["shipping"] = ship_checkpoints(checkpoints, runs_dir, report)
    report["total_wall_time_s"] = time.perf_counter() - started
    plot_learning_curves(report["runs"], out / CURVES_FILE)
    write_json_atomic(out / "learn_report.json", json_safe(report))
    write_text_atomic(out / "learn_report.md", render_markdown(report))
    if publish is not None:
        publish.mkdir(parents=True, exist_ok=True)
        for source, target in (("learn_report.md", "report.md"), ("learn_report.json", "report.json"),
                               (CURVES_FILE, CURVES_FILE)):
            with atomic_output(publish / target) as tmp:
                shutil.copyfile(out / source, tmp)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.training.learn_report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("learn_output"), help="report folder (default learn_output)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training recipe (default %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="override train.max_steps of every run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value for every run")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="also copy the trained models here as demo_<task>.pt")
    parser.add_argument("--variant", dest="variants", action="append", default=None, metavar="NAME:KEY=VALUE,...",
                        help="an extra multitask run with these overrides (repeatable; default "
                             + "; ".join(f"{n}:{','.join(o)}" for n, o in DEFAULT_VARIANTS.items())
                             + "); --variant none for no extra run")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                        help="comma-separated seeds; every model is trained once per seed (default %(default)s)")
    parser.add_argument("--publish", type=Path, default=None,
                        help="also copy the report here as report.md, report.json and the curves (docs/learning)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once, one process each (same results as 1; default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides) + ([f"train.max_steps={args.steps}"] if args.steps else [])
    try:
        config = load_config(args.config, overrides)
        variants = None
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        if args.variants is not None:
            variants = dict(parse_variant(v) for v in args.variants if v != "none")
    except (ConfigError, ValueError) as exc:
        print(f"learn_report: error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "mtl_perception.training.learn_report",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        report = build_report(config, args.out, command, args.checkpoints, variants, max(args.jobs, 1), seeds,
                              args.publish)
    except ConfigError as exc:
        print(f"learn_report: error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "learn_report.md").read_text())
    log.info("learning report written to %s in %.0f s", args.out, report["total_wall_time_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
