"""Export a checkpoint's network to TorchScript, ONNX or a TensorRT engine.

Exported models take the Predictor's preprocessed batch (float [B, 3, H, W] RGB in
[0, 255] at the input size, fitted as the checkpoint's ``resize`` says: ``stretch``, or
``letterbox`` with the mean-pixel padding of :mod:`mtl_perception.letterbox`) and return the
raw head outputs under the names in :data:`mtl_perception.models.OUTPUT_KEYS`; consumers
postprocess them with :mod:`mtl_perception.postprocess`, the same path as the Predictor
(``Predictor(..., backend="onnxruntime")`` does both). ONNX files carry the checkpoint's
config (``resize`` included, also as ``mtl_perception.resize``) and class names as
metadata, so they are self-describing.

ONNX files carry ``mtl_perception.precision`` (``fp32`` or ``int8``) and ``mtl_perception.batch``
(``1`` or ``dynamic``); int8 files also ``mtl_perception.calibration`` (source, frames and the
agreement with fp32 measured on them; :mod:`mtl_perception.engines.quantize`). Any of them can be
given as a node's or the Predictor's ``checkpoint``.

CLI: ``mtl-export CHECKPOINT --format onnx|torchscript|tensorrt --out PATH [--check] [--dynamic-batch]``
and ``mtl-export CHECKPOINT --format onnx --int8 --calibration BAG_OR_IMAGE_FOLDER [--calibration-frames N] --out PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_output
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from .models.nets import OUTPUT_KEYS
from .engines.onnx_session import (META_BATCH, META_CLASS_NAMES, META_CONFIG, META_INPUT_SIZE, META_MODEL_NAME,
                                   META_PRECISION, META_RESIZE, META_SEG_LOGITS)

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript", "tensorrt")
DEFAULT_OPSET = 18


class _TupleOutputs(nn.Module):
    """Raw outputs as a tuple in :data:`OUTPUT_KEYS` order (exporters need fixed outputs).

    ``seg_output_size`` is what the Predictor's torch path asks of the network (the FCN's
    score map for a stretched input, so the postprocess resizes once, straight to each
    frame's size; None for a letterboxed one, at the input size).
    """

    def __init__(self, model: nn.Module, seg_output_size: tuple[int, int] | None = None):
        super().__init__()
        self.model = model
        self.seg_output_size = seg_output_size
        self.keys = [k for k in OUTPUT_KEYS if _has_output(model, k)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images, self.seg_output_size)
        return tuple(outputs[k] for k in self.keys)


def _has_output(model: nn.Module, key: str) -> bool:
    return model.config.has_segmentation if key == "seg_logits" else model.config.has_detection


def _example(checkpoint: Checkpoint, input_size: tuple[int, int] | None) -> tuple[torch.Tensor, tuple[int, int]]:
    size = tuple(int(v) for v in (input_size or checkpoint.config.input_size))
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, *size, generator=generator) * 255.0, size


def seg_output_size(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The segmentation logits' size the Predictor asks for: the score map of a stretched input,
    None (the input size) for a letterboxed one or a network without segmentation."""
    if not model.config.has_segmentation or model.config.resize != "stretch":
        return None
    return model.score_map_size(input_size)


def export_onnx(checkpoint: Checkpoint | str | os.PathLike, out_path: str | os.PathLike,
                input_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                metadata: dict[str, str] | None = None) -> Path:
    """Export to ONNX (input ``images``; outputs named as the head outputs), written atomically.

    Segmentation logits come as the Predictor's torch path computes them: at the FCN's score
    resolution for a stretched input (``mtl_perception.seg_logits`` = ``score_map``; the
    postprocess resizes them once to the frame), at the input size for a letterboxed one
    (``input``). ``dynamic_batch`` exports a batch dimension of any size (``multicam_node``);
    otherwise the batch is 1. ``metadata`` adds entries to the file's ``metadata_props``.
    """
    import onnx

    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    example, size = _example(checkpoint, input_size)
    model = checkpoint.build_model()
    wrapper = _TupleOutputs(model, seg_output_size(model, size)).eval()
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None
    with atomic_output(out_path) as tmp:
        with torch.no_grad(), _quiet():
            torch.onnx.export(wrapper, (example,), str(tmp), input_names=["images"], output_names=wrapper.keys,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=dynamic)
        proto = onnx.load(str(tmp))
        meta = {
            META_CONFIG: json.dumps(checkpoint.config.to_dict()),
            META_CLASS_NAMES: json.dumps(checkpoint.class_names),
            META_INPUT_SIZE: json.dumps(list(size)),
            META_RESIZE: checkpoint.config.resize,
            META_MODEL_NAME: checkpoint.model_name,
            META_SEG_LOGITS: "score_map" if wrapper.seg_output_size else "input",
            META_PRECISION: "fp32",
            META_BATCH: "dynamic" if dynamic_batch else "1",
            **(metadata or {}),
        }
        set_metadata(proto, meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return Path(out_path)


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries of an ONNX model proto."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


@contextlib.contextmanager
def _quiet():
    """torch.onnx's dynamo exporter prints its progress to stdout: keep a node's log and a CLI's output clean."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def export_torchscript(checkpoint: Checkpoint | str | os.PathLike, out_path: str | os.PathLike,
                       input_size: tuple[int, int] | None = None) -> Path:
    """Export a traced TorchScript module returning the tuple of head outputs."""
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    wrapper = _TupleOutputs(checkpoint.build_model()).eval()
    example, _ = _example(checkpoint, input_size)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (example,))
    extra = {"output_keys.json": json.dumps(wrapper.keys), "class_names.json": json.dumps(checkpoint.class_names),
             "model_config.json": json.dumps(checkpoint.config.to_dict())}
    with atomic_output(out_path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return Path(out_path)


def export_tensorrt(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp16") -> Path:
    """Build a TensorRT engine from an ONNX export (needs the ``tensorrt`` package and a GPU)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("TensorRT export needs the 'tensorrt' Python package (pip install tensorrt) and an NVIDIA GPU") from exc
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT export needs a CUDA GPU")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return Path(engine_path)


def check_onnx_parity(checkpoint: Checkpoint | str | os.PathLike, onnx_path: str | os.PathLike,
                      image: np.ndarray | None = None) -> dict[str, float]:
    """Run one image through the Predictor with the torch and onnxruntime backends.

    Returns the max absolute difference of each raw output and of the decoded boxes, and the
    fraction of mask pixels that differ.
    """
    from .predictor import Predictor

    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (*checkpoint.config.input_size, 3), dtype=np.uint8)
    reference = Predictor(checkpoint, device="cpu", warmup=0)
    exported = Predictor(checkpoint, device="cpu", warmup=0, backend="onnxruntime", onnx_path=onnx_path)
    batch = reference.preprocess(image)
    with torch.inference_mode():
        ref_out = reference.forward(batch)
        onnx_out = exported.forward(batch)
    diffs = {k: float((ref_out[k] - onnx_out[k]).abs().max()) for k in ref_out}
    ref_pred, onnx_pred = reference.predict(image), exported.predict(image)
    if ref_pred.boxes.shape == onnx_pred.boxes.shape:
        diffs["boxes"] = float(np.abs(ref_pred.boxes - onnx_pred.boxes).max()) if len(ref_pred.boxes) else 0.0
    else:
        diffs["boxes"] = float("inf")
    if ref_pred.mask is not None:
        diffs["mask_disagreement"] = float((ref_pred.mask != onnx_pred.mask).mean())
    return diffs


def export_int8(checkpoint: Checkpoint | str | os.PathLike, out_path: str | os.PathLike, calibration,
                input_size: tuple[int, int] | None = None, dynamic_batch: bool = False) -> dict:
    """Export to ONNX and quantize to int8 on ``calibration`` (a
    :class:`~mtl_perception.engines.calibration.CalibrationSet`); returns the calibration report
    (also in the file's metadata, see :mod:`mtl_perception.engines.quantize`)."""
    from .engines.quantize import quantize_int8

    with tempfile.TemporaryDirectory(prefix="mtl_export_") as tmp:
        fp32 = export_onnx(checkpoint, Path(tmp) / "fp32.onnx", input_size, dynamic_batch=dynamic_batch)
        return quantize_int8(fp32, out_path, calibration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtl-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="model checkpoint (.pt)")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="default: the checkpoint's")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16", help="TensorRT only")
    parser.add_argument("--check", action="store_true", help="ONNX: compare against PyTorch through onnxruntime")
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX: a batch of any size (multicam_node)")
    parser.add_argument("--int8", action="store_true",
                        help="ONNX: int8 static QDQ quantization (onnxruntime, CPU), calibrated on --calibration")
    parser.add_argument("--calibration", metavar="BAG_OR_IMAGE_FOLDER",
                        help="--int8: a rosbag (folder, .mcap, .db3) or a folder of images from the camera")
    parser.add_argument("--calibration-frames", type=int, default=None, metavar="N",
                        help="--int8: frames spread evenly over the calibration source (default 32)")
    parser.add_argument("--camera-topic", help="--int8 from a bag: its camera topic (default: the bag's)")
    args = parser.parse_args(argv)
    if args.int8 and args.format != "onnx":
        parser.error("--int8 needs --format onnx")
    if args.int8 and not args.calibration:
        parser.error("--int8 needs --calibration BAG_OR_IMAGE_FOLDER (frames from the camera the model will see)")
    if (args.calibration or args.calibration_frames) and not args.int8:
        parser.error("--calibration and --calibration-frames go with --int8")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        size = tuple(args.input_size) if args.input_size else None
        if args.format == "torchscript":
            path = export_torchscript(checkpoint, args.out, size)
        elif args.format == "onnx" and args.int8:
            from .engines.calibration import DEFAULT_CALIBRATION_FRAMES, calibration_set
            from .engines.quantize import format_report

            calibration = calibration_set(args.calibration, args.calibration_frames or DEFAULT_CALIBRATION_FRAMES,
                                          args.camera_topic)
            report = export_int8(checkpoint, args.out, calibration, size, args.dynamic_batch)
            path = Path(args.out)
            print(format_report(report))
        elif args.format == "onnx":
            path = export_onnx(checkpoint, args.out, size, dynamic_batch=args.dynamic_batch)
            if args.check:
                print(json.dumps(check_onnx_parity(checkpoint, path), indent=2))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                onnx_file = export_onnx(checkpoint, Path(tmp) / "model.onnx", size)
                path = export_tensorrt(onnx_file, args.out, args.precision)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"mtl-export: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # CLI: one clear line, non-zero exit
        print(f"mtl-export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
