"""A real ``mtl-train`` process killed with SIGKILL loses at most one checkpoint interval,
and ``--resume`` then ends with the weights of an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from mtl_perception.training.config import config_from_dict
from mtl_perception.training.state import load_training_state
from mtl_perception.training.trainer import Trainer
from test_training import assert_same_weights, make_tiny_data, restore_torch_threads, tiny_config_dict  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 4
MAX_STEPS = 60
STEP_LINE = re.compile(r"step (\d+)/\d+ epoch")


def start_training(config_path: Path, output: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mtl_perception.training", "--config", str(config_path), "--output", str(output),
         *extra], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path):
    sets = make_tiny_data(tmp_path / "data")
    config_dict = tiny_config_dict(sets, train={
        "max_steps": MAX_STEPS, "seed": 5, "checkpoint_every_steps": INTERVAL, "eval_every_epochs": 0,
        "progress": False, "log_every_steps": 1, "device": "cpu", "workers": 0})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config_dict))

    process = start_training(config_path, tmp_path / "killed")
    lines, reached = [], []

    def read_output():
        for line in process.stdout:
            lines.append(line)
            match = STEP_LINE.search(line)
            if match:
                reached.append(int(match.group(1)))

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not (reached and reached[-1] >= 2 * INTERVAL + 2) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended early:\n" + "".join(lines)
        time.sleep(0.01)
    assert reached, "no progress within 120 s:\n" + "".join(lines)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    reader.join(timeout=10)
    assert process.returncode == -signal.SIGKILL

    progress = max(reached)
    assert progress < MAX_STEPS
    saved = load_training_state(tmp_path / "killed" / "state.pt")  # intact after the kill
    assert saved["step"] % INTERVAL == 0 and saved["step"] >= 2 * INTERVAL
    assert 0 <= progress - saved["step"] < INTERVAL, (progress, saved["step"])

    resumed = start_training(config_path, tmp_path / "killed", "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resumed from {tmp_path / 'killed' / 'state.pt'} at step {saved['step']}" in output
    final = load_training_state(tmp_path / "killed" / "state.pt")
    assert final["step"] == MAX_STEPS

    reference = Trainer(config_from_dict(config_dict), tmp_path / "reference")
    reference.fit()
    assert_same_weights(final["model"], reference.model.state_dict())
    assert_same_weights(final["optimizer"]["state"][0], reference.optimizer.state_dict()["state"][0])
