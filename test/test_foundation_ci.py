"""A fresh clone of the committed HEAD passes .ci/run (setup from scratch, smoke tests)."""

import os
import re
import shutil
import subprocess
import time

import pytest
import ros_harness

REPO_ROOT = ros_harness.REPO_ROOT
# Variables of this session's environment that the fresh clone must not inherit.
INHERITED_SETUP = ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "VIRTUAL_ENV",
                   "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
                   "ROS_DOMAIN_ID", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")


def clean_environment():
    env = {key: value for key, value in os.environ.items() if key not in INHERITED_SETUP}
    env["PATH"] = os.pathsep.join(
        part for part in env["PATH"].split(os.pathsep)
        if part and not part.startswith(str(REPO_ROOT)))
    env.update(MTL_SMOKE_ONLY="1", CI="true")
    return env


@pytest.mark.slow
def test_fresh_clone_passes_ci(tmp_path):
    if os.environ.get("MTL_SMOKE_ONLY") == "1":
        pytest.skip("already inside the nested CI run")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    started = time.monotonic()
    try:
        result = subprocess.run(["bash", ".ci/run"], cwd=clone, env=clean_environment(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=2400)
    finally:
        minutes = (time.monotonic() - started) / 60
        print(f"\nfresh clone: .ci/run took {minutes:.1f} min")
        shutil.rmtree(clone, ignore_errors=True)  # a fresh .venv is several GB
    tail = result.stdout[-6000:]
    assert result.returncode == 0, tail
    summary = re.search(r"=+ (\d+) passed(.*) in [\d.]+s", result.stdout)
    assert summary, tail
    assert int(summary.group(1)) >= 5 and "failed" not in summary.group(2), summary.group(0)
