"""DDP on two CPU processes (gloo), set up from torchrun's environment variables."""

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mtl_perception.training.config import config_from_dict
from mtl_perception.training.trainer import Trainer
from test_training import NUM_DET_IMAGES, NUM_SEG_IMAGES, assert_same_weights, make_tiny_data, tiny_config_dict

WORLD_SIZE = 2
EPOCHS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_rank(rank: int, config_dict: dict, output: str, port: int, results: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    seen = []

    def record(trainer, step, images, targets):
        seen.append((trainer.epoch, [t["image_id"] for t in targets], ["boxes" in t for t in targets]))

    trainer = Trainer(config_from_dict(config_dict), output, step_callback=record)
    assert trainer.context.rank == rank and trainer.context.world_size == WORLD_SIZE
    summary = trainer.fit()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    torch.save({"seen": seen, "model": state, "loss": summary["final_metrics"].get("score")},
               Path(results) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_see_disjoint_batches_and_end_identical(tmp_path):
    sets = make_tiny_data(tmp_path / "data")
    # 6 samples per source, 1 per batch and rank: 3 steps make one epoch over both sources.
    config = tiny_config_dict(sets, data={
        "train": [{"dataset": sets["det_train"], "per_batch": 1}, {"dataset": sets["seg_train"], "per_batch": 1}],
        "val": [sets["det_val"], sets["seg_val"]]},
        train={"epochs": EPOCHS, "max_steps": None, "seed": 2, "progress": False, "device": "cpu", "checkpoint_every_steps": 2,
               "eval_every_epochs": 1})
    mp.spawn(run_rank, args=(config, str(tmp_path / "run"), free_port(), str(tmp_path)), nprocs=WORLD_SIZE,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    steps_per_epoch = NUM_DET_IMAGES // WORLD_SIZE
    assert NUM_SEG_IMAGES // WORLD_SIZE == steps_per_epoch
    for epoch in range(EPOCHS):
        per_rank = [[ids for e, ids, _ in r["seen"] if e == epoch] for r in results]
        assert all(len(batches) == steps_per_epoch for batches in per_rank)
        samples = [{(has_boxes, image_id) for e, ids, boxes in r["seen"] if e == epoch
                    for image_id, has_boxes in zip(ids, boxes)} for r in results]
        assert not samples[0] & samples[1], "the ranks trained on the same samples"
        assert len(samples[0] | samples[1]) == NUM_DET_IMAGES + NUM_SEG_IMAGES  # together: every sample once
        for r in results:  # every batch interleaves both tasks
            assert all(boxes == [True, False] for e, _, boxes in r["seen"])
    assert_same_weights(results[0]["model"], results[1]["model"])
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "state.pt").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == EPOCHS  # rank 0 alone evaluated


def test_torchrun_launches_the_cli_on_two_cpu_ranks(tmp_path):
    import subprocess
    import sys

    import yaml

    from mtl_perception.checkpoint import load_checkpoint

    sets = make_tiny_data(tmp_path / "data")
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config_dict(sets, train={"max_steps": 2, "eval_every_epochs": 0})))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "mtl_perception.training", "--config", str(config_path), "--output", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[rank 0] INFO" in result.stderr and "[rank 1] INFO" not in result.stderr  # rank 0 alone logs
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint.metadata["step"] == 2
    assert checkpoint.metadata["command"] == f"mtl-train --config {config_path} --output {tmp_path / 'run'}"
