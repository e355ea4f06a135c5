"""The Predictor's pre/postprocess against hand-computed geometry, batching, colour, compile, CUDA.

Known-answer tests use a probe network: its segmentation logits say "red > 128" and its one
detection is the bounding box of the red pixels it sees at the input size. A red rectangle
drawn in the original frame must therefore come back as that rectangle, in original
pixels, whatever the frame's size and the resize mode.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception.checkpoint import make_checkpoint, save_checkpoint
from mtl_perception.models import BBOX_REGRESSION, CLS_LOGITS, SEG_LOGITS, ModelConfig, build_model
from mtl_perception.models.anchors import box_coder
from mtl_perception.postprocess import DetectionParams, colorize_masks
from mtl_perception.predictor import Predictor, resolve_compile_mode, resolve_device
from mtl_perception.visualization import colorize_mask, segmentation_palette

NAMES = {"segmentation": ["background", "red", "unused"], "detection": ["person", "red_thing"]}
INPUT = (64, 64)
PROBE_ANCHORS = torch.tensor([[16.0, 16.0, 48.0, 48.0], [0.0, 0.0, 8.0, 8.0]])


def _config(resize="stretch", input_size=INPUT):
    return ModelConfig(trunk="resnet18", input_size=input_size, num_seg_classes=3, num_det_classes=2,
                       det_extra_channels=(64, 64, 64), seg_head_channels=32, resize=resize)


class ProbeNet(nn.Module):
    """Stands in for PerceptionNet: outputs that are a known function of the input pixels."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.box_coder = box_coder()
        self.register_buffer("unused", torch.zeros(1))

    def anchors(self, input_size=None, device="cpu"):
        return PROBE_ANCHORS.to(device)

    def score_map_size(self, input_size):
        return tuple(input_size)  # the probe's scores are at full input resolution

    def forward(self, images, seg_output_size=None):
        red = images[:, 0].float()
        batch = images.shape[0]
        seg = torch.stack([torch.full_like(red, 128.0), red, torch.zeros_like(red)], 1)
        if seg_output_size is not None:
            seg = F.interpolate(seg, size=seg_output_size, mode="bilinear", align_corners=False)
        regression = torch.zeros(batch, 2, 4)
        for b in range(batch):
            inside = red[b] > 128
            rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
            box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()[None]
            regression[b, 0] = self.box_coder.encode_single(box, PROBE_ANCHORS[:1])[0]
        logits = torch.full((batch, 2, 3), -10.0)
        logits[:, 0, 2] = 10.0  # anchor 0 is a "red_thing" with score ~1
        logits[:, 1, 0] = 10.0  # anchor 1 is background
        return {SEG_LOGITS: seg, BBOX_REGRESSION: regression, CLS_LOGITS: logits}


def _probe_predictor(resize):
    return Predictor.from_model(ProbeNet(_config(resize)), NAMES, device="cpu",
                                detection=DetectionParams(score_threshold=0.5))


def _frame(height, width, rect):
    """A grey frame with a red rectangle ``rect`` = (x0, y0, x1, y1)."""
    frame = np.full((height, width, 3), 60, np.uint8)
    x0, y0, x1, y1 = rect
    frame[y0:y1, x0:x1] = (250, 0, 0)
    return frame


def _assert_mask_is_rect(mask, rect, band):
    """Mask is 1 inside ``rect`` and 0 outside, except within ``band`` pixels of its edges."""
    x0, y0, x1, y1 = rect
    assert (mask[y0 + band: y1 - band, x0 + band: x1 - band] == 1).all()
    outside = np.ones(mask.shape, bool)
    outside[max(0, y0 - band): y1 + band, max(0, x0 - band): x1 + band] = False
    assert (mask[outside] == 0).all()


# 144x256 (16:9) letterboxed into 64x64: scale 0.25 -> 36x64 content, 14 rows of padding above.
# The rectangle's edges fall on whole input pixels (multiples of 4), so the probe sees it exactly.
LETTERBOX_CASES = [((144, 256), (64, 40, 192, 100)), ((256, 144), (40, 64, 100, 192))]


@pytest.mark.parametrize("size,rect", LETTERBOX_CASES)
def test_letterboxed_16_9_frame_round_trips_its_box_within_a_pixel(size, rect):
    predictor = _probe_predictor("letterbox")
    result = predictor.predict(_frame(*size, rect))
    assert result.labels.tolist() == [1]
    np.testing.assert_allclose(result.boxes[0], rect, atol=1.0)
    assert result.mask.shape == size
    _assert_mask_is_rect(result.mask, rect, band=4)  # one input pixel is 4 original pixels


def test_letterbox_input_keeps_the_aspect_ratio_and_pads_with_the_mean_pixel():
    predictor = _probe_predictor("letterbox")
    batch = predictor.preprocess(_frame(144, 256, (64, 40, 192, 100)))
    assert batch.shape == (1, 3, 64, 64)
    # Rows 0..13 and 50..63 are padding with the mean pixel (124, 116, 104) of ImageNet.
    for channel, value in enumerate((124.0, 116.0, 104.0)):
        assert (batch[0, channel, :14] == value).all() and (batch[0, channel, 50:] == value).all()
    # The rectangle at original rows 40..100, cols 64..192 is input rows 14 + 10 .. 14 + 25, cols 16..48.
    assert (batch[0, 0, 24:39, 16:48] > 200).all()
    torch.testing.assert_close(batch[0, 0, 14:23], torch.full((9, 64), 60.0))


def test_stretched_frame_maps_each_axis_on_its_own():
    predictor = _probe_predictor("stretch")
    # 180x320 into 64x64: x scale 0.2, y scale 64/180. Edges on whole input pixels: x multiples of 5,
    # y multiples of 45/16 -> rows 45 and 135 (input rows 16 and 48).
    rect = (40, 45, 200, 135)
    result = predictor.predict(_frame(180, 320, rect))
    np.testing.assert_allclose(result.boxes[0], rect, atol=1e-3)
    _assert_mask_is_rect(result.mask, rect, band=5)


def test_batch_of_different_sizes_equals_one_by_one():
    predictor = _probe_predictor("letterbox")
    frames = [_frame(144, 256, (64, 40, 192, 100)), _frame(256, 144, (40, 64, 100, 192)),
              _frame(64, 64, (8, 8, 20, 40))]
    batch = predictor.predict_batch(frames, color=True)
    assert len(batch) == 3
    for frame, together in zip(frames, batch):
        alone = predictor.predict(frame, color=True)
        np.testing.assert_array_equal(together.mask, alone.mask)
        np.testing.assert_array_equal(together.color, alone.color)
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-4)
        np.testing.assert_array_equal(together.labels, alone.labels)
    np.testing.assert_allclose(batch[2].boxes[0], (8, 8, 20, 40), atol=1e-3)  # 64x64: no resize at all
    assert predictor.predict_batch([]) == []


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("predictor")
    paths = {}
    for resize in ("stretch", "letterbox"):
        model = build_model(_config(resize, input_size=(96, 128))).eval()
        paths[resize] = save_checkpoint(make_checkpoint(model, NAMES), folder / f"{resize}.pt")
    return paths


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_real_network_batch_equals_single_predictions(tiny_checkpoints, resize):
    predictor = Predictor(tiny_checkpoints[resize], device="cpu", warmup=0,
                          detection=DetectionParams(score_threshold=0.2, max_detections=20))
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((72, 128, 3), (120, 90, 3))]
    for frame, together in zip(frames, predictor.predict_batch(frames)):
        alone = predictor.predict(frame)
        assert together.mask.shape == frame.shape[:2]
        assert (together.mask == alone.mask).mean() > 0.999
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-4)


def test_colour_image_is_the_palette_colouring_of_the_mask(tiny_checkpoints):
    predictor = Predictor(tiny_checkpoints["stretch"], device="cpu", warmup=0)
    image = np.random.default_rng(5).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    with_colour = predictor.predict(image, color=True)
    assert predictor.predict(image).color is None
    assert with_colour.color.shape == (50, 70, 3) and with_colour.color.dtype == np.uint8
    np.testing.assert_array_equal(with_colour.color, colorize_mask(with_colour.mask))


def test_palette_colours_are_the_pascal_voc_ones():
    mask = np.array([[0, 1, 2, 3], [15, 255, 1, 0]], np.uint8)
    expected = np.array([[(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)],
                         [(192, 128, 128), (224, 224, 192), (128, 0, 0), (0, 0, 0)]], np.uint8)
    np.testing.assert_array_equal(colorize_mask(mask), expected)
    np.testing.assert_array_equal(colorize_mask(mask.astype(np.int64) + 256), expected)  # wraps modulo 256
    palette = torch.from_numpy(segmentation_palette(256))
    np.testing.assert_array_equal(colorize_masks(torch.from_numpy(mask), palette).numpy(), expected)


def test_compile_option_is_validated():
    assert resolve_compile_mode(None, torch.device("cpu"), False) == "default"
    assert resolve_compile_mode(None, torch.device("cuda"), False) == "reduce-overhead"
    assert resolve_compile_mode(None, torch.device("cuda"), True) == "default"
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        resolve_compile_mode("fastest", torch.device("cpu"), False)
    with pytest.raises(ValueError, match="already uses CUDA graphs"):
        resolve_compile_mode("reduce-overhead", torch.device("cuda"), True)


@pytest.mark.slow
def test_compiled_predictor_matches_eager(tiny_checkpoints):
    eager = Predictor(tiny_checkpoints["stretch"], device="cpu", warmup=0,
                      detection=DetectionParams(score_threshold=0.2))
    compiled = Predictor(tiny_checkpoints["stretch"], device="cpu", warmup=1, compile=True,
                         detection=DetectionParams(score_threshold=0.2))
    assert compiled.compile_mode == "default" and compiled.compile_s > 0 and eager.compile_s == 0
    image = np.random.default_rng(6).integers(0, 256, (96, 128, 3), dtype=np.uint8)  # the input size: no resize
    batch = eager.preprocess(image)
    with torch.inference_mode():
        expected, got = eager.forward(batch), compiled.forward(batch)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-4)
    a, b = eager.predict(image), compiled.predict(image)
    assert (a.mask == b.mask).mean() > 0.999
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_cuda_device_index_is_parsed_and_checked():
    with pytest.raises(ValueError, match="cuda:N"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda:0' was requested but CUDA is not available"):
            resolve_device("cuda:0")
    else:
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(RuntimeError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


# -- CUDA only (run by scripts/gpu_check.sh) ---------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_cuda_path_matches_the_cpu_path(tiny_checkpoints, resize):
    image = np.random.default_rng(7).integers(0, 256, (180, 320, 3), dtype=np.uint8)
    params = DetectionParams(score_threshold=0.2)
    cpu = Predictor(tiny_checkpoints[resize], device="cpu", warmup=0, detection=params).predict(image, color=True)
    gpu = Predictor(tiny_checkpoints[resize], device="cuda:0", detection=params).predict(image, color=True)
    assert (gpu.mask == cpu.mask).mean() > 0.999
    np.testing.assert_array_equal(gpu.color, colorize_mask(gpu.mask))
    np.testing.assert_allclose(gpu.boxes, cpu.boxes, atol=1e-2)


@needs_cuda
def test_cuda_graph_per_batch_size_matches_single_predictions(tiny_checkpoints):
    predictor = Predictor(tiny_checkpoints["letterbox"], device="cuda", cuda_graph=True,
                          detection=DetectionParams(score_threshold=0.2))
    rng = np.random.default_rng(8)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((72, 128, 3), (120, 90, 3), (96, 128, 3))]
    together = predictor.predict_batch(frames, color=True)
    pair = predictor.predict_batch(frames[:2])
    assert sorted(predictor._graphs) == [1, 2, 3]
    for index, frame in enumerate(frames):
        alone = predictor.predict(frame, color=True)
        assert (together[index].mask == alone.mask).mean() > 0.999
        np.testing.assert_allclose(together[index].boxes, alone.boxes, atol=1e-2)
        if index < 2:
            np.testing.assert_array_equal(pair[index].mask, together[index].mask)


@needs_cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_compiled_predictor_matches_eager(tiny_checkpoints, cuda_graph):
    image = np.random.default_rng(9).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    params = DetectionParams(score_threshold=0.2)
    eager = Predictor(tiny_checkpoints["stretch"], device="cuda", detection=params)
    compiled = Predictor(tiny_checkpoints["stretch"], device="cuda", compile=True, cuda_graph=cuda_graph,
                         detection=params)
    assert compiled.compile_s > 0
    a, b = eager.predict(image), compiled.predict(image)
    assert (a.mask == b.mask).mean() > 0.999
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)


@needs_cuda
def test_cuda_half_precision_keeps_the_probe_geometry():
    predictor = Predictor.from_model(ProbeNet(_config("letterbox")), NAMES, device="cuda", precision="fp16",
                                     detection=DetectionParams(score_threshold=0.5))
    size, rect = LETTERBOX_CASES[0]
    result = predictor.predict(_frame(*size, rect), color=True)
    np.testing.assert_allclose(result.boxes[0], rect, atol=1.0)
    _assert_mask_is_rect(result.mask, rect, band=4)


def test_onnx_export_of_a_letterbox_model_keeps_the_geometry(tiny_checkpoints, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mtl_perception.export import export_onnx

    path = export_onnx(tiny_checkpoints["letterbox"], tmp_path / "letterbox.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["mtl_perception.resize"] == "letterbox"
    params = DetectionParams(score_threshold=0.2)
    image = np.random.default_rng(10).integers(0, 256, (90, 160, 3), dtype=np.uint8)  # 16:9
    torch_result = Predictor(tiny_checkpoints["letterbox"], device="cpu", warmup=0, detection=params).predict(image)
    onnx_result = Predictor(tiny_checkpoints["letterbox"], device="cpu", warmup=0, detection=params,
                            backend="onnxruntime", onnx_path=path).predict(image)
    assert onnx_result.mask.shape == (90, 160) and (onnx_result.mask == torch_result.mask).mean() > 0.999
    np.testing.assert_allclose(onnx_result.boxes, torch_result.boxes, atol=1e-2)


def test_inference_does_not_import_training_code():
    import subprocess
    import sys

    code = ("import sys, mtl_perception.predictor, mtl_perception.export; "
            "print(sorted(m for m in sys.modules if m in ('mtl_perception.losses', 'mtl_perception.training')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
