# shellcheck shell=bash
# Source me (bash): the runtime environment of the pip-wheel ROS 2 dev setup.
#   . scripts/ros_env.sh
# Activates .venv, overlays the colcon install in .ws/install (PATH, PYTHONPATH,
# LD_LIBRARY_PATH, AMENT_PREFIX_PATH; the tools make-bag, bag-info, mtl-train, mtl-eval,
# mtl-bench, mtl-export on PATH) and sets the DDS defaults below. Works under `set -u`.
# Build first with `make setup` (once) or `make build`.

_mtl_repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_mtl_venv=${VENV:-$_mtl_repo_root/.venv}
_mtl_install=$_mtl_repo_root/.ws/install

if [ ! -f "$_mtl_venv/bin/activate" ] || [ ! -f "$_mtl_install/local_setup.bash" ]; then
  echo "ros_env.sh: $_mtl_venv or $_mtl_install is missing; run 'make setup' first" >&2
  unset _mtl_repo_root _mtl_venv _mtl_install _mtl_nounset
  return 1 2>/dev/null || exit 1
fi

# The venv's and colcon's scripts read unset variables: source them without nounset
# (restored below), so this file also works from scripts running under `set -u`.
case $- in *u*) _mtl_nounset=1; set +u ;; *) _mtl_nounset= ;; esac
# shellcheck disable=SC1091
. "$_mtl_venv/bin/activate"
# The venv itself is the underlay prefix of the ROS 2 wheels.
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$_mtl_venv:"*) ;;
  *) export AMENT_PREFIX_PATH=$_mtl_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH} ;;
esac
# shellcheck disable=SC1091
. "$_mtl_install/local_setup.bash"
if [ -n "$_mtl_nounset" ]; then set -u; fi

export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
# Fast DDS' default transport drops most large best-effort frames (camera
# images); LARGE_DATA (TCP + shared memory) delivers them. Keep it in every
# process of the graph. Override by setting the variable before sourcing.
export FASTDDS_BUILTIN_TRANSPORTS=${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}

unset _mtl_repo_root _mtl_venv _mtl_install _mtl_nounset
