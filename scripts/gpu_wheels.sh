#!/usr/bin/env bash
# Download, on this machine, every cp312 wheel the GPU device machine lacks for
# scripts/gpu_check.sh: the ROS 2 runtime and build pieces, colcon, rosbags and
# the evaluation packages, at the versions installed in .venv (the set the test
# suite passes with). The device has torch, torchvision, numpy, onnxruntime and
# the packages listed below; none of those travels.
#
# Usage: scripts/gpu_wheels.sh [DEST]      (default <repo>/.gpu_wheels, gitignored)
# Env:   VENV  the dev venv whose installed versions are pinned (default <repo>/.venv)
# Needs network to PyPI. Idempotent: wheels already in DEST are kept, stale ones removed.
# Wheels are slimmed to fit (scripts/gpu_wheels.py: duplicate libraries, strip).
# Ends by printing the wheels' size and the tree's: together at most 64 MiB travel.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$repo_root/.gpu_wheels}
venv=${VENV:-$repo_root/.venv}
python=$venv/bin/python
tool=$repo_root/scripts/gpu_wheels.py
[ -x "$python" ] || { echo "gpu_wheels: $python not found; run 'make setup' first" >&2; exit 2; }
command -v strip >/dev/null || { echo "gpu_wheels: 'strip' (binutils) is needed to slim the wheels" >&2; exit 2; }
mkdir -p "$dest"

# Distributions the device image already holds (device tool's KINDS.md, read 2026-11-17),
# the CUDA stack among them: none of these travels.
device_has="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil py-cpuinfo pyarrow pybind11 pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
# Carried although the device has it: colcon's symlink install wants this setuptools.
force_carry="setuptools"
# What gpu_check.sh installs; their dependencies follow from the installed metadata.
roots="$(sed -e 's/#.*//' -e 's/[=<>~ ].*//' "$repo_root/requirements/ros.txt" | tr '\n' ' ')"
roots="$roots rosbags faster-coco-eval pycocotools setuptools"

printf '%s\n' $roots > "$dest/roots.txt"
"$python" "$tool" pins "$roots" "$device_has" "$force_carry" > "$dest/pins.txt"
echo "[gpu-wheels] $(wc -l < "$dest/pins.txt") distributions to carry, pinned to $venv (list: $dest/pins.txt)"

pip_download() {
  "$python" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" "$@"
}

# Wheels already there (slimmed earlier) are kept; download only the others. A pin with
# no cp312 or pure wheel on PyPI is built here, and must come out pure Python.
needed=$("$python" - "$dest" <<'PY'
import sys
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
dest = Path(sys.argv[1])
have = {(n, str(v)) for n, v, _, _ in (parse_wheel_filename(w.name) for w in dest.glob("*.whl"))}
for line in (dest / "pins.txt").read_text().split():
    r = Requirement(line)
    if (canonicalize_name(r.name), next(iter(r.specifier)).version) not in have:
        print(line)
PY
)
if [ -n "$needed" ] && ! pip_download $needed 2>/dev/null; then
  for pin in $needed; do
    pip_download "$pin" 2>/dev/null && continue
    echo "[gpu-wheels] $pin: no cp312 or pure-Python wheel on PyPI; building it here"
    "$python" -m pip wheel --disable-pip-version-check -q --no-deps --no-binary=:all: -w "$dest/.built" "$pin"
  done
  for built in "$dest"/.built/*.whl; do
    [ -e "$built" ] || continue
    case $(basename "$built") in
      *-none-any.whl) mv "$built" "$dest/" ;;
      *) echo "gpu_wheels: $(basename "$built") is not pure Python, so it can't be built here for cp312" >&2; exit 1 ;;
    esac
  done
  rm -rf "$dest/.built"
fi
"$python" "$tool" check "$dest"
"$python" "$tool" slim "$dest"

# What travels: tracked files + untracked non-ignored files, plus these carried wheels.
cd "$repo_root"
tree_bytes=$( { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 -r stat -c %s -- 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
wheel_bytes=$(cat "$dest"/*.whl "$dest"/*.txt | wc -c)
limit=$((64 * 1024 * 1024))
total=$((tree_bytes + wheel_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "[gpu-wheels] wheels: $(ls "$dest"/*.whl | wc -l) files, $(mib "$wheel_bytes") in $dest"
echo "[gpu-wheels] tree (git ls-files + untracked, not ignored): $(mib "$tree_bytes")"
echo "[gpu-wheels] together: $(mib "$total") of the 64 MiB that travel ($(mib $((limit - total))) to spare)"
if [ "$total" -gt "$limit" ]; then
  echo "gpu_wheels: over the 64 MiB limit by $(mib $((total - limit)))" >&2
  exit 1
fi
