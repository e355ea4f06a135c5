#!/usr/bin/env bash
# Point the ROS wheels' exported CMake files at this venv's Python and numpy
# include dirs instead of the wheel-build host's (/opt/python/cp3XX-cp3XX/...).
#
# Usage: scripts/fix_ros_cmake_paths.sh VENV_DIR
set -euo pipefail

venv=${1:?usage: fix_ros_cmake_paths.sh VENV_DIR}

"$venv/bin/python" - "$venv" <<'PY'
import re
import sys
import sysconfig
from pathlib import Path

import numpy

venv = Path(sys.argv[1])
build_host = r"/opt/python/cp3\d+-cp3\d+"
replacements = [
    (re.compile(build_host + r"/include/python3\.\d+"), sysconfig.get_paths()["include"]),
    (re.compile(build_host + r"/lib/python3\.\d+/site-packages/numpy/_core/include"),
     numpy.get_include()),
]
rewritten = 0
leftovers = []
for cmake_file in sorted(venv.glob("share/*/cmake/*.cmake")):
    text = cmake_file.read_text()
    if "/opt/python/" not in text:
        continue
    for pattern, local_path in replacements:
        text = pattern.sub(local_path, text)
    cmake_file.write_text(text)
    rewritten += 1
    if "/opt/python/" in text:
        leftovers.append(str(cmake_file))
if leftovers:
    sys.exit("unrecognised build-host paths left in: " + ", ".join(leftovers))
print(f"[setup] rewrote build-host paths in {rewritten} CMake files")
PY
