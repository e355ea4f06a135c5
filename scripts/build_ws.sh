#!/usr/bin/env bash
# Build the colcon workspace .ws/ (gitignored) from the pip-wheel ROS 2 in the
# venv: exactly two packages, the vision_msgs twin and mtl_perception.
# Incremental; --symlink-install keeps edits to existing Python files live,
# new files need a rebuild.
#
# Usage: scripts/build_ws.sh [extra colcon build args]
# Env:   VENV (default <repo>/.venv)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo_root/.venv}
ws=$repo_root/.ws

if [ ! -x "$venv/bin/colcon" ]; then
  echo "error: $venv/bin/colcon not found; run 'make setup' first" >&2
  exit 1
fi

# The workspace sees the sources through symlinks in .ws/src:
# - mtl_perception -> the repo root. CMake then takes .ws/src/mtl_perception as
#   the source dir, so the venv's include dirs (inside the repo) are not
#   "prefixed in the source directory", which CMake rejects for exported targets.
# - vision_msgs/<entry> -> vision_msgs_twin/<entry>: the twin carries a
#   COLCON_IGNORE so no crawl ever picks it up; per-entry links leave it behind.
mkdir -p "$ws/src/vision_msgs"
ln -sfn "$repo_root" "$ws/src/mtl_perception"
for entry in package.xml CMakeLists.txt msg; do
  ln -sfn "$repo_root/vision_msgs_twin/$entry" "$ws/src/vision_msgs/$entry"
done

# Hermetic: only the venv's ROS prefix, never a sourced system ROS.
unset CMAKE_PREFIX_PATH COLCON_PREFIX_PATH AMENT_CURRENT_PREFIX
export VIRTUAL_ENV=$venv
export PATH=$venv/bin:$PATH
export AMENT_PREFIX_PATH=$venv

cd "$ws"
# --symlink-install leaves a dangling link behind for every renamed or deleted
# source file; a stale module there would still be found by imports and tests.
if [ -d "$ws/install" ]; then
  find "$ws/install" -xtype l -delete
fi
# One build at a time: several people share this checkout.
exec flock "$ws/.build.lock" \
  colcon --log-base "$ws/log" build \
    --base-paths "$ws/src" \
    --build-base "$ws/build" \
    --install-base "$ws/install" \
    --symlink-install \
    "$@" \
    --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$venv/bin/python"
