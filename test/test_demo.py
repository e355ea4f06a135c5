"""`make demo` end to end: real aerial images, the shipped checkpoints, both graphs over DDS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("ros_node")


def test_demo_compares_both_graphs_on_real_images_with_the_shipped_checkpoints(tmp_path):
    out = tmp_path / "demo_output"
    result = subprocess.run([sys.executable, "-P", "-m", "mtl_perception.replay.demo", "--out", str(out), "--device", "cpu",
                             "--quick", "--fixed-rates", "10"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
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
