"""``mtl-eval``: score a checkpoint on a dataset split; prints a table, writes metrics JSON.

Examples::

    mtl-eval --checkpoint runs/demo_multitask/best.pt --dataset deepforest_trees --split heldout
    mtl-eval --checkpoint runs/demo_multitask/best.pt --dataset solaris_buildings --split heldout --out seg.json
    mtl-eval --checkpoint voc_multitask.pt --dataset voc --root ~/data/VOCdevkit --split 2012:val
    mtl-eval --checkpoint model.pt --dataset-config my_val.yaml --device cuda --max-images 500

A dataset config YAML is one :func:`mtl_perception.data.build_dataset` mapping
(``type: voc``, ``root: ...``, ...). Exit status: 0 done, 2 bad input (arguments,
checkpoint, dataset, class names that differ from the checkpoint's), 1 failure while
running (device, writing the output).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_json_atomic
from ..checkpoint import CheckpointError, load_checkpoint
from ..data.build import build_dataset
from ..postprocess import DetectionParams
from ..exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from ..predictor import DEVICES, PRECISIONS, Predictor
from .evaluate import EvaluationError, evaluate

PROG = "mtl-eval"
AERIAL_TYPES = ("deepforest_trees", "solaris_buildings")
DATASET_TYPES = (*AERIAL_TYPES, "voc", "sdd")


class UsageError(ValueError):
    """Arguments that argparse accepts but that do not fit together."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.pt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset-config", type=Path, metavar="YAML", help="a build_dataset mapping (type: ...)")
    source.add_argument("--dataset", choices=DATASET_TYPES, metavar="TYPE",
                        help=f"a known dataset: {', '.join(DATASET_TYPES)}")
    parser.add_argument("--split", help="with --dataset: all|train|heldout for the aerial data (default heldout); "
                                        "'YEAR:NAME' for voc (default 2012:val, 2007:test for detection models)")
    parser.add_argument("--root", type=Path,
                        help="with --dataset: dataset root (voc: VOCdevkit, sdd: SDD root; aerial: folder of the "
                             "sample files, default the installed package's)")
    parser.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)} | cuda:N (default auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--score-threshold", type=float, default=0.01,
                        help="detection score threshold (keep it low for mAP; default 0.01)")
    parser.add_argument("--max-detections", type=int, default=100, help="detections kept per image (default 100)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="score only the first N samples")
    parser.add_argument("--out", type=Path, default=Path("metrics.json"), help="metrics JSON (default metrics.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def dataset_config_from_args(args: argparse.Namespace, tasks: tuple[str, ...]) -> dict[str, Any]:
    """The ``build_dataset`` mapping selected by ``--dataset-config`` or ``--dataset``/``--split``/``--root``."""
    if args.dataset_config is not None:
        if args.split is not None or args.root is not None:
            raise UsageError("--split and --root go with --dataset, not with --dataset-config")
        return load_dataset_config(args.dataset_config)
    kind = args.dataset
    if kind in AERIAL_TYPES:
        cfg: dict[str, Any] = {"type": kind, "split": args.split or "heldout"}
        if args.root is not None:
            cfg["data_dir"] = str(args.root)
        return cfg
    if args.root is None:
        raise UsageError(f"--dataset {kind} needs --root")
    if kind == "sdd":
        if args.split is not None:
            raise UsageError("--dataset sdd has no --split; choose videos with --dataset-config "
                             "(type: sdd, videos: [...])")
        return {"type": "sdd", "root": str(args.root)}
    # voc: the mode follows the model's tasks; multitask models are scored on images with both labels.
    mode = {("segmentation",): "seg", ("detection",): "det"}.get(tuple(tasks), "both")
    split = args.split or ("2007:test" if mode == "det" else "2012:val")
    return {"type": "voc", "root": str(args.root), "splits": [split], "mode": mode}


def load_dataset_config(path: Path) -> dict[str, Any]:
    """Read a dataset config YAML: one mapping with a ``type``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset config not found")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise UsageError(f"{path}: a dataset config must be a mapping with 'type' (e.g. type: voc)")
    return cfg


def format_table(metrics: dict[str, Any]) -> str:
    """A short human summary of :func:`run` results."""
    lines = [f"{metrics['model']} on {_describe(metrics['dataset'])}: {metrics['num_images']} images, "
             f"{metrics['device']} {metrics['precision']}"]
    seg_iou = metrics.get("seg_iou") or {}
    det_ap = metrics.get("det_per_class_ap50") or {}
    width = max([len(n) for n in seg_iou] + [len(n) for n in det_ap] + [8])
    if "seg_miou" in metrics:
        lines.append(f"segmentation ({metrics['seg_num_images']} images): mIoU {_num(metrics['seg_miou'])}, "
                     f"pixel accuracy {_num(metrics['seg_pixel_accuracy'])}")
        lines += [f"  {name:<{width}}  IoU {_num(value)}" for name, value in seg_iou.items()]
    if "det_voc_ap50" in metrics:
        lines.append(f"detection ({metrics['det_num_images']} images, {metrics['det_num_ground_truth']} boxes): "
                     f"VOC AP50 {_num(metrics['det_voc_ap50'])}, VOC07 AP50 {_num(metrics['det_voc07_ap50'])}, "
                     f"COCO mAP {_num(metrics['det_coco_map'])}, AP50 {_num(metrics['det_coco_ap50'])}, "
                     f"AP75 {_num(metrics['det_coco_ap75'])}")
        coco = metrics.get("det_per_class_coco_map") or {}
        lines += [f"  {name:<{width}}  AP50 {_num(value)}  COCO AP {_num(coco.get(name))}"
                  for name, value in det_ap.items()]
    latency = metrics["latency_ms"]
    lines.append(f"latency per image: p50 {_num(latency['p50'], 1)} ms, p90 {_num(latency['p90'], 1)} ms")
    return "\n".join(lines)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _describe(cfg: dict[str, Any]) -> str:
    detail = cfg.get("split") or cfg.get("splits") or cfg.get("root") or cfg.get("image_dir") or cfg.get("ann_file")
    return f"{cfg.get('type')} ({detail})" if detail else str(cfg.get("type"))


def _one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the checkpoint and dataset of ``args``, evaluate, write ``args.out``; returns the metrics."""
    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images must be >= 1, got {args.max_images}")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory; give a file name such as {args.out / 'metrics.json'}")
    checkpoint = load_checkpoint(args.checkpoint)
    cfg = dataset_config_from_args(args, checkpoint.config.tasks)
    try:
        dataset = build_dataset(cfg)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise UsageError(f"dataset {_describe(cfg)}: {exc}") from exc
    params = DetectionParams(score_threshold=args.score_threshold, max_detections=args.max_detections,
                             pre_nms_top_k=max(1000, args.max_detections))
    predictor = Predictor(checkpoint, device=args.device, precision=args.precision, detection=params)
    scores = evaluate(predictor, dataset, max_images=args.max_images, progress=not args.no_progress)
    metrics = {
        "checkpoint": str(args.checkpoint),
        "model": predictor.model_name,
        "dataset": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
        "dataset_config": str(args.dataset_config) if args.dataset_config is not None else None,
        "device": str(predictor.device),
        "precision": predictor.precision,
        **scores,
    }
    write_json_atomic(args.out, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        metrics = run(args)
    except (CheckpointError, EvaluationError, UsageError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # CLI: one clear line, no traceback (--log-level DEBUG shows it)
        logging.getLogger(__name__).debug("failure", exc_info=True)
        print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(format_table(metrics))
    print(f"wrote {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
