"""int8 on the CPU: onnxruntime static quantization of an fp32 export, calibrated on real frames.

The fp32 file goes through ``quant_pre_process`` (shape inference, graph optimisation) and
``quantize_static`` in the QDQ format: int8 weights per output channel, uint8 activations,
ranges from the min and max seen on the calibration frames. The frames are preprocessed by
the Predictor itself (its resize, letterbox padding and layout), so the ranges are those the
deployed network sees. Rank-1 weights (the detection head's norm scales) stay fp32: onnxruntime
warns that it cannot quantize them per channel.

The int8 file carries the fp32 file's metadata plus ``mtl_perception.precision = int8`` and
``mtl_perception.calibration``: the source, the frames, and the agreement with fp32 measured on
those frames through the Predictor (mask pixels equal; boxes matched at IoU >= 0.5 with the same
label, as 2 x matched / (fp32 boxes + int8 boxes)).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_output
from .calibration import CalibrationSet
from .onnx_session import META_CALIBRATION, META_PRECISION, read_metadata

log = logging.getLogger(__name__)

QUANTIZATION_SETTINGS = {"format": "QDQ", "per_channel": True, "weights": "int8", "activations": "uint8",
                         "calibration": "minmax"}
BOX_MATCH_IOU = 0.5


class _FrameReader:
    """onnxruntime's CalibrationDataReader over preprocessed frames (one batch of 1 each)."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name = input_name
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self):  # not needed by the min-max calibrator
        raise NotImplementedError


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: CalibrationSet) -> dict:
    """Write the int8 model of ``fp32_path`` to ``out_path`` (atomically); returns the report
    (also in the file's ``mtl_perception.calibration`` metadata)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..export import set_metadata
    from ..predictor import Predictor

    fp32_path = Path(fp32_path)
    reference = Predictor(fp32_path, device="cpu", backend="onnxruntime", warmup=0)
    batches = [reference.preprocess(frame).numpy().astype(np.float32) for frame in calibration.frames]
    with tempfile.TemporaryDirectory(prefix="mtl_int8_") as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), _FrameReader(reference.onnx_session.input_name, batches),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(quantized))
        set_metadata(proto, {**read_metadata(fp32_path), META_PRECISION: "int8"})
        onnx.save(proto, str(quantized))
        candidate = Predictor(quantized, device="cpu", backend="onnxruntime", precision="int8", warmup=0)
        report = {"source": calibration.source, "frames": len(calibration.frames), "source_frames": calibration.total,
                  "digest": calibration.digest, "settings": QUANTIZATION_SETTINGS,
                  "agreement_with_fp32": agreement([reference.predict(f) for f in calibration.frames],
                                                   [candidate.predict(f) for f in calibration.frames])}
        candidate.release()
        proto = onnx.load(str(quantized))
        set_metadata(proto, {META_CALIBRATION: json.dumps(report)})
        with atomic_output(out_path) as tmp:
            onnx.save(proto, str(tmp))
    reference.release()
    return report


def calibration_report(path: str | os.PathLike) -> dict | None:
    """The ``mtl_perception.calibration`` report of an int8 file (None for an fp32 one)."""
    text = read_metadata(path).get(META_CALIBRATION)
    return json.loads(text) if text else None


def agreement(reference: Sequence, candidate: Sequence, iou_threshold: float = BOX_MATCH_IOU) -> dict:
    """How far ``candidate`` predictions agree with ``reference`` ones, frame by frame.

    Returns ``mask_agreement`` (fraction of mask pixels equal over all frames; None without
    masks), ``box_agreement`` (2 x matched / (reference boxes + candidate boxes); 1.0 when neither
    has a box), and the counts behind it. A candidate box matches the unmatched reference box of
    its label with the highest IoU, at ``iou_threshold`` or more, candidates taken by score.
    """
    import torch
    from torchvision.ops import box_iou

    equal = pixels = matched = n_ref = n_cand = 0
    for ref, cand in zip(reference, candidate, strict=True):
        if ref.mask is not None:
            equal += int((ref.mask == cand.mask).sum())
            pixels += ref.mask.size
        n_ref, n_cand = n_ref + len(ref.boxes), n_cand + len(cand.boxes)
        if len(ref.boxes) and len(cand.boxes):
            ious = box_iou(torch.from_numpy(cand.boxes), torch.from_numpy(ref.boxes)).numpy()
            ious[cand.labels[:, None] != ref.labels[None, :]] = 0.0
            taken = np.zeros(len(ref.boxes), bool)
            for index in np.argsort(-cand.scores, kind="stable"):
                row = np.where(taken, -1.0, ious[index])
                best = int(row.argmax())
                if row[best] >= iou_threshold:
                    taken[best] = True
                    matched += 1
    return {"mask_agreement": equal / pixels if pixels else None,
            "box_agreement": 2 * matched / (n_ref + n_cand) if (n_ref + n_cand) else 1.0,
            "boxes_fp32": n_ref, "boxes_int8": n_cand, "boxes_matched": matched,
            "box_match_iou": iou_threshold}


def format_report(report: dict) -> str:
    """The printed int8 report: calibration source and agreement with fp32."""
    agree = report["agreement_with_fp32"]
    mask = f"{100 * agree['mask_agreement']:.2f}% of mask pixels equal" if agree["mask_agreement"] is not None else "no masks"
    return (f"int8 calibration: {report['frames']} of {report['source_frames']} frames of {report['source']}\n"
            f"agreement with fp32 on those frames: {mask}; boxes {100 * agree['box_agreement']:.1f}% agree "
            f"({agree['boxes_matched']} matched at IoU >= {agree['box_match_iou']} of {agree['boxes_fp32']} fp32 / "
            f"{agree['boxes_int8']} int8)")
