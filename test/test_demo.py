"""`make demo` end to end: real aerial images, the shipped checkpoints, both graphs over DDS."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtl_perception.bags.reader import BagReader

pytestmark = pytest.mark.usefixtures("ros_node")


def test_demo_compares_both_graphs_on_real_images_with_the_shipped_checkpoints(tmp_path):
    out = tmp_path / "demo_output"
    result = subprocess.run([sys.executable, "-P", "-m", "mtl_perception.replay.demo", "--out", str(out), "--device", "cpu",
                             "--quick", "--fixed-rates", "10", "--engine", "int8", "--engine-baseline", "torch"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| checkpoint size (MB) |" in result.stdout and "compare.md" in result.stdout
    assert "Budget: shared: every process of the graph on CPU" in result.stdout
    assert "| peak throughput (frames/s with every output) |" in result.stdout and "| 10 Hz: latency p50 (ms) |" in result.stdout
    table = json.loads((out / "compare.json").read_text())
    assert table["complete"] and table["budget"]["mode"] == "shared"
    assert table["multitask"]["peak_fps"] > 0 and table["naive"]["peak_fps"] > 0
    assert table["ratios"]["throughput"] == pytest.approx(table["multitask"]["peak_fps"] / table["naive"]["peak_fps"])
    multitask, naive = table["multitask"], table["naive"]
    # Trained demo models, not random ones: the untrained network scores tree AP50 ~0.004 and
    # building-or-background mIoU ~0.49 on these held-out frames (see the learning report).
    assert multitask["det_voc_ap50"] > 0.05 and naive["det_voc_ap50"] > 0.05
    assert multitask["seg_miou"] > 0.55 and naive["seg_miou"] > 0.55
    assert table["ratios"]["size"] > 1.4 and table["ratios"]["memory"] > 1.3
    for graph in ("multitask", "naive"):
        report = json.loads((out / graph / "report.json").read_text())
        assert report["frames"]["answered"] == report["frames"]["published"] == 14
        [run] = report["fixed_rate"]
        assert run["rate_hz"] == 10.0 and run["published"] == 20 and not run["silent_nodes"]
        assert len(list((out / graph / "overlays").glob("*.png"))) == 3
    assert (out / "latency_cdf.png").stat().st_size > 1000
    # int8 ran in both graphs, calibrated on the training tiles: none of them is a frame the demo scored.
    assert "int8" in table["engines"]["multitask"] and "int8" in table["engines"]["naive"], table["engines"]
    tiles = sorted((out / "calibration_tiles").glob("*.png"))
    assert len(tiles) == 32
    with BagReader(out / "demo_bag") as bag:
        scored = {hashlib.sha256(np.ascontiguousarray(frame.image).tobytes()).hexdigest() for frame in bag.frames()}
    calibrated = {hashlib.sha256(np.asarray(Image.open(t).convert("RGB")).tobytes()).hexdigest() for t in tiles}
    assert len(scored) == 14 and not scored & calibrated
    # The same graph again with torch, in the same run: the engine row and its ratio.
    torch_report = json.loads((out / "multitask_torch" / "report.json").read_text())
    assert torch_report["engine"].startswith("torch") and torch_report["frames"]["answered"] == 14
    section = table["engine_comparison"]
    assert section["speedup"] == pytest.approx(torch_report["latency_ms"]["p50"] / multitask["latency_ms_p50"])
    assert "## Engine against torch" in (out / "compare.md").read_text() and (out / "engines.md").is_file()


def test_engine_section_reports_the_speedup_and_how_short_of_30_hz_the_graph_fell():
    from mtl_perception.replay.demo import engine_section

    default = {"engine": "onnxruntime CPUExecutionProvider fp32", "latency_ms": {"p50": 25.0},
               "fixed_rate": [{"rate_hz": 10.0, "published": 60, "answered": 60},
                              {"rate_hz": 30.0, "published": 180, "answered": 153}]}
    section = engine_section(default, {"engine": "torch cpu fp32", "latency_ms": {"p50": 40.0}}, "auto")
    assert section["speedup"] == 1.6 and section["status"] == "FAIL"  # 40 / 25 < 1.8
    assert "answered 153 of 180 frames with both outputs: 27 short (15%)" in section["markdown"]
    section = engine_section({**default, "fixed_rate": [{"rate_hz": 30.0, "published": 90, "answered": 90}]},
                             {"engine": "torch cpu fp32", "latency_ms": {"p50": 50.0}}, "auto")
    assert section["speedup"] == 2.0 and section["status"] == "PASS"
    assert "answered 90 of 90 frames with both outputs." in section["markdown"]
