"""The engines side by side in ``mtl-bench --engines torch,onnxruntime,int8``: per network
(multitask, naive pair) network p50/p90, whole-Predictor p50, RSS growth, file size and held-out
accuracy, then the engines issue's targets, each PASS or FAIL, with the machine.

Accuracy is scored on the held-out aerial tiles of :func:`~mtl_perception.data.aerial_sample_splits`
(solaris buildings: mIoU; deepforest trees: VOC AP50) through the one evaluation path
(:func:`~mtl_perception.evaluation.evaluate.evaluate`, the training's score threshold 0.01 and 200
detections), so it applies to models of those classes (the demo checkpoints).
"""

from __future__ import annotations

import math
from pathlib import Path

from .machine import machine_line

EVAL_SCORE_THRESHOLD = 0.01  # as training's evaluation (config eval.score_threshold)
EVAL_MAX_DETECTIONS = 200
# The engines issue's targets on the bench (ratios in one run, one thread).
ORT_SPEEDUP_TARGET = 2.0  # onnxruntime fp32 over torch eager, multitask Predictor
INT8_SPEEDUP_TARGET = 1.3  # int8 over onnxruntime fp32
MIOU_POINTS = 1.0  # int8 mIoU within this many points of fp32
AP50_POINTS = 2.0  # int8 tree AP50 within this many points of fp32


def heldout_accuracy(predictors) -> dict:
    """mIoU (segmentation models) and tree AP50 (detection models) of ``predictors`` on the held-out
    aerial tiles; ``{"reason": ...}`` when the models or the data do not fit."""
    from .data.aerial import aerial_sample_splits
    from .evaluation.evaluate import EvaluationError, evaluate
    from .postprocess import DetectionParams

    try:
        splits = aerial_sample_splits()
    except (FileNotFoundError, ValueError) as exc:
        return {"reason": f"held-out aerial tiles unavailable: {exc}"}
    params = DetectionParams(score_threshold=EVAL_SCORE_THRESHOLD, max_detections=EVAL_MAX_DETECTIONS)
    scores: dict = {}
    for predictor in predictors:
        saved = predictor.detection_params
        predictor.set_detection_params(params)
        try:
            if "segmentation" in predictor.tasks:
                scores["seg_miou"] = evaluate(predictor, splits.seg_heldout, progress=False)["seg_miou"]
            if "detection" in predictor.tasks:
                scores["tree_ap50"] = evaluate(predictor, splits.det_heldout, progress=False)["det_voc_ap50"]
        except EvaluationError as exc:
            return {"reason": f"not aerial models: {exc}"}
        finally:
            predictor.set_detection_params(saved)
    return scores


def _ok(report: dict) -> dict[tuple[str, str, str], dict]:
    return {(v.get("engine", "torch"), v["precision"], v["mode"]): v for v in report["variants"] if v["status"] == "ok"}


def _reference(variants: dict) -> dict | None:
    """The fp32 reference of int8's accuracy: onnxruntime fp32, else torch fp32 eager."""
    return variants.get(("onnxruntime", "fp32", "onnxruntime")) or variants.get(("torch", "fp32", "eager"))


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def _target(key: str, text: str, value: float | None, passed: bool | None, detail: str) -> dict:
    status = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return {"key": key, "target": text, "value": value, "status": status, "detail": detail}


def engine_targets(report: dict) -> list[dict]:
    """The engines issue's bench targets judged on ``report`` (missing variants: n/a, saying why)."""
    variants = _ok(report)
    torch_eager = variants.get(("torch", "fp32", "eager"))
    ort = variants.get(("onnxruntime", "fp32", "onnxruntime"))
    int8 = variants.get(("int8", "int8", "onnxruntime"))
    threads = report["budget"].get("torch_threads")
    note = "" if threads == 1 else f" (measured with {threads or 'the default'} threads; the target is one thread)"
    targets = []

    def speed(key, text, slow, fast, goal, names):
        if slow is None or fast is None:
            return _target(key, text, None, None, f"needs the {' and '.join(names)} variants")
        whole = _ratio(slow["results"]["multitask"]["latency_ms"]["p50"], fast["results"]["multitask"]["latency_ms"]["p50"])
        network = _ratio(slow["results"]["multitask"]["network_ms"]["p50"], fast["results"]["multitask"]["network_ms"]["p50"])
        return _target(key, text, whole, whole is not None and whole >= goal,
                       f"multitask Predictor p50 {slow['results']['multitask']['latency_ms']['p50']:.1f} ms vs "
                       f"{fast['results']['multitask']['latency_ms']['p50']:.1f} ms = {whole:.2f}x (network alone "
                       f"{network:.2f}x){note}")

    targets.append(speed("ort_vs_torch", f"onnxruntime fp32 >= {ORT_SPEEDUP_TARGET}x faster than torch eager",
                         torch_eager, ort, ORT_SPEEDUP_TARGET, ("torch fp32 eager", "onnxruntime")))
    targets.append(speed("int8_vs_ort", f"int8 >= {INT8_SPEEDUP_TARGET}x faster than onnxruntime fp32",
                         ort, int8, INT8_SPEEDUP_TARGET, ("onnxruntime", "int8")))
    reference = _reference(variants)
    for key, metric, points in (("int8_miou", "seg_miou", MIOU_POINTS), ("int8_ap50", "tree_ap50", AP50_POINTS)):
        name = "mIoU" if metric == "seg_miou" else "tree AP50"
        text = f"int8 held-out {name} within {points:g} point(s) of fp32"
        for side in ("multitask", "naive"):
            ref = ((reference or {}).get("results", {}).get(side, {}).get("accuracy") or {}).get(metric)
            got = ((int8 or {}).get("results", {}).get(side, {}).get("accuracy") or {}).get(metric)
            if ref is None or got is None:
                reason = ((int8 or {}).get("results", {}).get(side, {}).get("accuracy") or {}).get("reason")
                targets.append(_target(f"{key}_{side}", f"{text} ({side})", None, None,
                                       reason or "needs the int8 variant and an fp32 one with --accuracy"))
                continue
            delta = 100 * (got - ref)  # a difference exactly at the limit passes (no float noise)
            targets.append(_target(f"{key}_{side}", f"{text} ({side})", delta, abs(delta) <= points + 1e-9,
                                   f"{100 * got:.2f} vs fp32 {100 * ref:.2f} ({delta:+.2f} points)"))
    return targets


def _pair(m: dict, n: dict, key: str, digits: int = 1) -> str:
    a, b = m.get(key), n.get(key)
    fmt = lambda v: "–" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return f"{fmt(a)} / {fmt(b)}"


def _score(result: dict, metric: str) -> str:
    accuracy = result.get("accuracy") or {}
    value = accuracy.get(metric)
    return "–" if value is None else f"{100 * value:.2f}"


def engines_markdown(report: dict) -> str:
    """The engines section of bench.md: tables per network, calibration, targets, machine."""
    lines = ["## Engines side by side", "", report["budget"]["line"], ""]
    machine = report.get("machine")
    if machine:
        end = report.get("machine_end")
        lines += [machine_line(machine) + (f" At the end: {end['loadavg_1min']:.2f}." if end else ""), ""]
    lines += ["| engine | execution provider | precision | network p50 / p90 (ms), multitask | naive pair | "
              "Predictor p50 (ms), multitask / naive | speed (naive ÷ multitask) | RSS growth (MB), multitask / naive | "
              "file (MB), multitask / naive |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    accuracy_rows = []
    for variant in report["variants"]:
        engine = variant.get("engine", "torch")
        label = engine if engine != "torch" else f"torch {variant['mode']}"
        if variant["status"] != "ok":
            lines.append(f"| {label} | | {variant['precision']} | {variant['status']}: {variant['reason']} | | | | | |")
            continue
        m, n = variant["results"]["multitask"], variant["results"]["naive"]
        lines.append(
            f"| {label} | {m.get('execution_provider', m['device'])} | {m['precision']} | "
            f"{m['network_ms']['p50']:.1f} / {m['network_ms']['p90']:.1f} | {n['network_ms']['p50']:.1f} / "
            f"{n['network_ms']['p90']:.1f} | {m['latency_ms']['p50']:.1f} / {n['latency_ms']['p50']:.1f} | "
            f"{variant['ratios']['speed']:.2f}x | {_pair(m, n, 'memory_mb', 0)} | {_pair(m, n, 'file_mb', 2)} |")
        if m.get("accuracy") is not None:
            accuracy_rows.append(f"| {label} {m['precision']} | {_score(m, 'seg_miou')} / {_score(n, 'seg_miou')} | "
                                 f"{_score(m, 'tree_ap50')} / {_score(n, 'tree_ap50')} |")
    lines += ["", "Network: the engine's forward pass alone (the naive pair: both networks); Predictor: the whole "
              "predict (resize, network, postprocess). RSS growth: resident memory the worker gained during the "
              "variant (the first variant of a worker is the full figure). File: the engine's model file (.onnx, "
              "or the torch checkpoint).", ""]
    if accuracy_rows:
        lines += ["Held-out accuracy (aerial tiles never trained or calibrated on; the evaluation path of mtl-eval):", "",
                  "| engine | mIoU (%), multitask / naive | tree AP50 (%), multitask / naive |", "|---|---:|---:|",
                  *accuracy_rows, ""]
    for variant in report["variants"]:
        for side, prepared in (variant.get("prepared") or {}).items():
            files = prepared.get("files") or []
            for index, calibration in enumerate(prepared.get("calibration") or []):
                if calibration:
                    agree = calibration["agreement_with_fp32"]
                    mask = "–" if agree["mask_agreement"] is None else f"{100 * agree['mask_agreement']:.2f}%"
                    model = f" ({Path(files[index]).name})" if index < len(files) and files[index] else ""
                    lines.append(f"- int8 {side}{model}: calibrated on {calibration['frames']} of {calibration['source_frames']} "
                                 f"frames of {calibration['source']}; on them, mask pixels equal to fp32 {mask}, "
                                 f"boxes agreeing {100 * agree['box_agreement']:.1f}%")
    lines += ["", "### Targets", ""]
    for target in report.get("targets") or engine_targets(report):
        lines.append(f"- **{target['status']}** {target['target']}: {target['detail']}")
    return "\n".join(lines) + "\n"
