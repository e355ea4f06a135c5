#!/usr/bin/env bash
# The GPU check (issue 10): one command on the device machine (one H200, Python 3.12 with
# torch, no ROS, no network) that installs the carried wheels, builds the package, runs the
# CUDA tests, benchmarks multitask vs naive and replays a 1280x720 bag through both ROS
# graphs, then judges every figure against the issue's targets.
#
#   scripts/gpu_check.sh                  on the device: run through the device tool, carrying
#                                         .gpu_wheels (make gpu-wheels); docs/gpu.md
#   GPU_CHECK_DRY=1 scripts/gpu_check.sh  the same on this CPU with tiny counts, the dev .venv
#                                         and .ws; CUDA-only pieces are skipped with the reason
#
# Steps, in order: install build cuda_tests bench_resnet50 bench_mobilenet_v2 engines (onnxruntime
# fp32 on the CPU EP and, if present, the CUDA EP, torch beside) replay bench_compiled
# multicam (4 cameras on the replay's 1280x720 bag: one batched node vs one node per camera).
# Each has its own timeout; a failing step is recorded and the next one runs; the whole run
# keeps within GPU_CHECK_BUDGET_S. After every step the results are rewritten into $OUT, so
# a run stopped from outside still returns what it measured:
#   summary.md    targets PASS/FAIL, the figures behind them, every step's status
#   results.json  all of it, machine-readable      bench.md, replay.md  the full tables
#   logs.txt      every step's log, bundled       multicam.md  the multicam step's report
#
# Env: OUT (default <repo>/gpu_check_out), GPU_CHECK_DRY, GPU_CHECK_BUDGET_S (default 450),
#      GPU_CHECK_STEPS (default: all, space-separated), GPU_CHECK_WHEELS (default
#      <repo>/.gpu_wheels), GPU_CHECK_PYTHON (default python3; dry: .venv/bin/python),
#      GPU_CHECK_TESTS (a pytest -k expression narrowing the CUDA tests, which are the tests
#      with a skipif marker that names CUDA or a GPU: scripts/gpu_check_select.py).
# Exit status: 0 every step ran (targets are judged in summary.md, not here); 1 a step failed.
set -uo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
dry=${GPU_CHECK_DRY:-0}
out=${OUT:-$repo_root/gpu_check_out}
budget_s=${GPU_CHECK_BUDGET_S:-450}
wheels=${GPU_CHECK_WHEELS:-$repo_root/.gpu_wheels}
steps=${GPU_CHECK_STEPS:-install build cuda_tests bench_resnet50 bench_mobilenet_v2 engines replay bench_compiled multicam}
tests_k=${GPU_CHECK_TESTS:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
export GPU_CHECK_WORK=$work
mkdir -p "$work/logs"
started=$(date +%s)
: > "$work/steps.jsonl"

if [ "$dry" = 1 ]; then
  base_python=${GPU_CHECK_PYTHON:-$repo_root/.venv/bin/python}
  runtime_venv=$repo_root/.venv          # the dev venv and .ws: the build is make setup's
  device=cpu
  # Tiny counts: the dry run proves the wiring, its figures are no GPU figures.
  bench_args="--device cpu --frame-size 720 1280 --iters 2 --frames 2 --warmup 0 --threads 1"
  r50="64 64"; mnv2="64 64"
  replay_frames=3; replay_seconds=1; replay_peak=--no-peak
  node_params="device=cpu precision=fp32 cuda_graph=false"
else
  base_python=${GPU_CHECK_PYTHON:-python3}
  runtime_venv=$work/venv
  device=cuda
  bench_args="--device cuda --frame-size 720 1280 --iters 200 --frames 8 --warmup 10"
  r50="512 512"; mnv2="320 320"
  replay_frames=90; replay_seconds=5; replay_peak=--peak
  node_params="device=cuda precision=fp16 cuda_graph=true"
fi
report_python=$base_python
command -v "$report_python" >/dev/null 2>&1 || report_python=python3

log() { echo "[gpu-check $(date -u +%H:%M:%S)] $*"; }

record() {  # record STEP STATUS RC SECONDS REASON
  "$report_python" -c 'import json, sys
step, status, rc, seconds, reason = sys.argv[1:6]
print(json.dumps({"step": step, "status": status, "rc": int(rc), "seconds": float(seconds), "reason": reason or None}))' \
    "$@" >> "$work/steps.jsonl"
}

report() {
  "$report_python" "$repo_root/scripts/gpu_check_report.py" --work "$work" --out "$out" --dry "$dry" \
    --budget-s "$budget_s" >> "$work/logs/report.log" 2>&1 || log "the report failed: see logs.txt"
}

failed=0
# run_step NAME DEFAULT_TIMEOUT_S FUNCTION: within what is left of the budget, logged, recorded.
run_step() {
  local name=$1 limit=$2 fn=$3
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((budget_s - ($(date +%s) - started) - 10))
  if [ "$left" -lt 15 ]; then
    record "$name" skipped 0 0 "the run's budget of ${budget_s} s was spent before this step"
    report
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name (timeout ${limit} s)"
  local t0=$SECONDS reason_file=$work/logs/$name.reason rc
  rm -f "$reason_file"
  # SIGINT first: Python's finally blocks run, so a replay stops the graph it started.
  timeout --signal=INT --kill-after=15 "$limit" bash -c "$fn" > "$work/logs/$name.log" 2>&1
  rc=$?
  local seconds=$((SECONDS - t0)) reason=""
  [ -f "$reason_file" ] && reason=$(cat "$reason_file")
  if [ "$rc" = 0 ]; then
    record "$name" ok 0 "$seconds" "$reason"
  elif [ "$rc" = 77 ]; then       # the step decided it does not apply here; the reason says why
    record "$name" skipped 0 "$seconds" "$reason"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ] || [ "$rc" = 130 ]; then
    record "$name" timeout "$rc" "$seconds" "stopped after ${limit} s${reason:+; $reason}"
    failed=1
  else
    record "$name" failed "$rc" "$seconds" "${reason:-exit status $rc: see logs.txt}"
    failed=1
  fi
  log "$name: $(tail -1 "$work/steps.jsonl")"
  report
}

# Every step runs in its own bash; these are what it sees.
export repo_root work dry out wheels device base_python runtime_venv tests_k replay_frames replay_seconds \
  replay_peak node_params r50 mnv2 bench_args
export PYTHONUNBUFFERED=1 MTL_TEST_NO_AUTO_BUILD=1

skip() { echo "$*" > "$work/logs/$step.reason"; exit 77; }
fail() {  # the step's own last error line, if it printed one, joins the reason
  local cause; cause=$(grep -i "error" "$work/logs/$step.log" 2>/dev/null | tail -1 | cut -c1-300)
  echo "$*${cause:+: $cause}" > "$work/logs/$step.reason"; echo "error: $*" >&2; exit 1
}
ros_env() { VENV=$runtime_venv . "$repo_root/scripts/ros_env.sh" || fail "scripts/ros_env.sh: no runtime (venv $runtime_venv, .ws)"; }
export -f skip fail ros_env

# -- install: the carried wheels into a venv over the device's Python (its torch) ----------
step_install() {
  step=install
  [ -d "$wheels" ] || fail "no wheel folder $wheels: run 'make gpu-wheels' here and carry .gpu_wheels"
  venv=$work/venv
  nested=$("$base_python" -c 'import sys; print(int(sys.prefix != sys.base_prefix))') || fail "$base_python does not run"
  if [ "$nested" = 1 ]; then
    # A venv made from inside a venv sees the base interpreter's packages, not the parent
    # venv's: hand it the parent's site-packages (torch and the rest) by a .pth file.
    "$base_python" -m venv --without-pip "$venv" || fail "python -m venv failed"
    parent_site=$("$base_python" -c 'import site; print(site.getsitepackages()[0])')
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$parent_site')" > "$site/_gpu_check_parent_site.pth"
  else
    "$base_python" -m venv --without-pip --system-site-packages "$venv" || fail "python -m venv failed"
  fi
  if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then pip=("$venv/bin/python" -m pip)
  else pip=("$base_python" -m pip --python "$venv/bin/python"); fi
  pip+=(install --no-index --no-cache-dir --disable-pip-version-check --find-links "$wheels")
  if [ "$dry" = 1 ]; then
    # This CPU runs Python 3.11: of the cp312 wheels only pure-Python ones install here; the
    # five smallest prove the path (--no-index from the folder, links, the CMake rewrite).
    mapfile -t subset < <(ls -Sr "$wheels"/*-none-any.whl 2>/dev/null | head -5)
    [ ${#subset[@]} -gt 0 ] || fail "no pure-Python wheel in $wheels to install in the dry run"
    # --ignore-installed: the dev venv beneath holds the same versions, which would satisfy pip.
    "${pip[@]}" --no-deps --ignore-installed "${subset[@]}" || fail "pip install of the pure-Python wheels failed"
  elif ! "${pip[@]}" -r "$wheels/pins.txt"; then   # exact versions; what they need beyond comes from the device
    echo "[install] resolving against the device's packages failed; installing every wheel with --no-deps"
    "${pip[@]}" --no-deps "$wheels"/*.whl || fail "pip install --no-deps of the carried wheels failed"
    "$venv/bin/python" -m pip check || echo "[install] pip check: see above (the device's own versions differ)"
  fi
  # Shared libraries the wheel format flattened into copies travel once (gpu_wheels.py slim).
  links=$work/links.json; echo "[]" > "$links"
  if [ -f "$wheels/links.txt" ]; then
    while read -r wheel path target; do
      [ -n "$path" ] || continue
      [ "$dry" = 1 ] && ! printf '%s\n' "${subset[@]}" | grep -qF "/$wheel" && continue
      ln -sfn "$target" "$venv/$path"
      "$venv/bin/python" -c 'import json, os, sys
path, links = sys.argv[1], sys.argv[2]
data = json.load(open(links)); data.append({"path": path, "resolves": os.path.exists(path)})
json.dump(data, open(links, "w"))' "$venv/$path" "$links"
    done < "$wheels/links.txt"
  fi
  "$repo_root/scripts/fix_ros_cmake_paths.sh" "$venv" || fail "fix_ros_cmake_paths.sh failed"
  # What the venv holds now (its own site-packages), for the report.
  "$venv/bin/python" - "$work/installed.json" "$dry" "$work/logs/install.reason" <<'PY' || exit 1
import importlib, json, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
own = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[site]))
info = {"installed": own, "python": sys.version.split()[0], "imports": {}}
if sys.argv[2] != "1":
    for module in ("rclpy", "rosbags", "faster_coco_eval", "colcon_core", "torch", "torchvision"):
        try:
            info["imports"][module] = str(getattr(importlib.import_module(module), "__version__", "ok"))
        except Exception as exc:  # reported, not raised: the reason names every module that failed
            info["imports"][module] = f"FAILED: {type(exc).__name__}: {exc}"
    if "FAILED" not in info["imports"]["torch"]:
        import torch
        info["cuda"] = torch.cuda.is_available()
        info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info)[:2000])
failed = [m for m, v in info["imports"].items() if v.startswith("FAILED")]
if failed:
    open(sys.argv[3], "w").write("these do not import in the venv: " + "; ".join(f"{m} ({info['imports'][m][8:]})" for m in failed))
    sys.exit(1)
PY
}

# -- build: the vision_msgs twin and mtl_perception with colcon in that venv ---------------
step_build() {
  step=build
  [ "$dry" = 1 ] && skip "dry run: the dev .ws built by make setup is used (a colcon build takes minutes here)"
  [ -x "$work/venv/bin/colcon" ] || fail "no colcon in $work/venv: the install step did not complete"
  if ! command -v cmake >/dev/null; then     # the pip package's cmake, when its bin isn't on PATH
    cmake_bin=$("$work/venv/bin/python" -c 'import cmake; print(cmake.CMAKE_BIN_DIR)' 2>/dev/null) && export PATH=$cmake_bin:$PATH
  fi
  for tool in cmake make g++; do command -v $tool >/dev/null || fail "'$tool' is not on the device's PATH"; done
  "$work/venv/bin/python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || fail "Python.h of the device's Python is missing: the message packages can't be built"
  if ! command -v flock >/dev/null; then     # build_ws.sh serialises builds with flock
    mkdir -p "$work/bin"; printf '#!/bin/sh\nshift\nexec "$@"\n' > "$work/bin/flock"; chmod +x "$work/bin/flock"
    export PATH=$work/bin:$PATH
  fi
  rm -rf "$repo_root/.ws"
  VENV=$work/venv MAKEFLAGS=-j16 "$repo_root/scripts/build_ws.sh" --parallel-workers 2 || fail "colcon build failed: see logs.txt"
}

# -- cuda_tests: the suite's CUDA tests (they skip without CUDA, saying so) -----------------
step_cuda_tests() {
  step=cuda_tests
  ros_env
  PYTHONPATH=$repo_root/scripts${PYTHONPATH:+:$PYTHONPATH} python -m pytest -p no:cacheprovider -p gpu_check_select \
    -q -rs ${tests_k:+-k "$tests_k"} --junitxml="$work/cuda_tests.xml" "$repo_root/test"
  rc=$?
  [ $rc = 0 ] || fail "pytest exited $rc"
}

# -- bench: multitask vs naive at one budget, every precision and mode ---------------------
bench() {  # bench NAME TRUNK H W ARGS...
  local name=$1 trunk=$2 h=$3 w=$4; shift 4
  ros_env
  python -P -m mtl_perception.bench $bench_args --trunk "$trunk" --input-size "$h" "$w" --out "$work/$name" "$@"
  rc=$?
  [ $rc = 0 ] || fail "mtl_perception.bench exited $rc (1: a variant failed, bench.json says which)"
}
export -f bench
step_bench_resnet50() { step=bench_resnet50; bench bench_resnet50 resnet50 $r50 --precision fp32 fp16 bf16 --mode eager cuda_graph; }
step_bench_mobilenet_v2() { step=bench_mobilenet_v2; bench bench_mobilenet_v2 mobilenet_v2 $mnv2 --precision fp32 fp16 bf16 --mode eager cuda_graph; }
step_bench_compiled() {
  step=bench_compiled
  [ "$dry" = 1 ] && skip "dry run: torch.compile of one model takes minutes on this CPU (151 s for MobileNetV2 64x64 on 2 cores); the GPU run measures it"
  ros_env
  python -P -m mtl_perception.bench $bench_args --trunk resnet50 --input-size $r50 --precision fp16 --mode compiled \
    --out "$work/bench_compiled_resnet50" || fail "compiled ResNet-50 bench failed"
  python -P -m mtl_perception.bench $bench_args --trunk mobilenet_v2 --input-size $mnv2 --precision fp16 --mode compiled \
    --out "$work/bench_compiled_mobilenet_v2" || fail "compiled MobileNetV2 bench failed"
}

# -- engines: onnxruntime fp32 on the device's CPU execution provider, then on its CUDA EP ---
# (the demo checkpoints; torch eager beside each for the ratio). Without the CUDA EP the
# step says so in its reason.
step_engines() {
  step=engines
  ros_env
  local iters=50 cpu_threads
  [ "$dry" = 1 ] && iters=2
  cpu_threads=$(nproc)
  local common=(--checkpoints checkpoints/demo_multitask.pt checkpoints/demo_segmentation.pt checkpoints/demo_detection.pt
                --frame-size 720 1280 --frames 2 --warmup 1 --iters "$iters" --no-accuracy)
  python -P -m mtl_perception.bench "${common[@]}" --device cpu --threads "$cpu_threads" --engines torch,onnxruntime \
    --out "$work/bench_engines_cpu" || fail "onnxruntime on the CPU EP: mtl_perception.bench exited $?"
  providers=$(python -c 'import onnxruntime; print(" ".join(onnxruntime.get_available_providers()))' 2>/dev/null)
  case " $providers " in
    *" CUDAExecutionProvider "*)
      if [ "$dry" = 1 ]; then
        echo "dry run: no CUDA device for onnxruntime's CUDA EP" > "$work/logs/engines.reason"; return 0
      fi
      python -P -m mtl_perception.bench "${common[@]}" --device cuda --engines torch,onnxruntime \
        --out "$work/bench_engines_cuda" || fail "onnxruntime on the CUDA EP: mtl_perception.bench exited $?" ;;
    *) echo "onnxruntime here has no CUDAExecutionProvider (providers: ${providers:-none}): only the CPU EP ran" \
         > "$work/logs/engines.reason" ;;
  esac
}

# -- replay: a synthetic 1280x720 30 Hz bag through both ROS graphs at the shared budget ----
step_replay() {
  step=replay
  ros_env
  python -c 'import mtl_perception.replay.compare' || fail "mtl_perception.replay.compare does not import (ROS runtime?)"
  python -P - "$work/replay_input" "$replay_frames" "$r50" "$node_params" "$repo_root/config/mtl_perception.yaml" <<'PY' \
    || fail "could not make the bag inputs"
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mtl_perception.bench import make_random_checkpoints

root, count = Path(sys.argv[1]), int(sys.argv[2])
size = tuple(int(v) for v in sys.argv[3].split())
(root / "images").mkdir(parents=True, exist_ok=True)
height, width = 720, 1280
y, x = np.mgrid[0:height, 0:width]
for i in range(count):  # a moving scene: gradients and two blocks (no ground truth)
    frame = np.stack([(x + 8 * i) % 256, y * 255 // height, ((x + y) // 8 + 5 * i) % 256], -1).astype(np.uint8)
    frame[200:420, (300 + 9 * i) % 1000:(300 + 9 * i) % 1000 + 220] = (200, 40, 40)
    frame[480:640, 900:1100] = (30, 160, 60)
    Image.fromarray(frame).save(root / "images" / f"frame_{i:04d}.png", compress_level=1)
groups = make_random_checkpoints(root, "resnet50", size)
params = yaml.safe_load(Path(sys.argv[5]).read_text())
for assignment in sys.argv[4].split():
    key, value = assignment.split("=")
    params["/**"]["ros__parameters"][key] = yaml.safe_load(value)
(root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
(root / "checkpoints.txt").write_text(" ".join(groups["multitask"] + groups["naive"]))
PY
  python -P -m mtl_perception.bags.make_bag "$work/replay_input/bag" --images "$work/replay_input/images" --rate 30 --quiet \
    || fail "make-bag failed"
  read -r multitask segmentation detection < "$work/replay_input/checkpoints.txt"
  python -P -m mtl_perception.replay.compare --bag "$work/replay_input/bag" --out "$work/replay" --device "$device" \
    --params "$work/replay_input/params.yaml" --checkpoint "$multitask" --segmentation-checkpoint "$segmentation" \
    --detection-checkpoint "$detection" --budget shared --mode lockstep --fixed-rates 30 \
    --fixed-seconds "$replay_seconds" $replay_peak --overlays 0
  rc=$?
  [ $rc = 0 ] || fail "mtl_perception.replay.compare exited $rc (3: frames were lost, replay.md says where)"
  [ "$replay_peak" = --peak ] || echo "dry run: no peak-throughput search (its binary search takes minutes on this CPU)" \
    > "$work/logs/replay.reason"
}
step_multicam() {  # issue 13: one batched multicam_node vs one multitask_node per camera, on the one GPU
  step=multicam
  [ "$dry" = 1 ] && skip "dry run: the multicam peak-throughput search takes minutes on this CPU; the GPU run measures it"
  [ -f "$work/replay_input/bag/metadata.yaml" ] || fail "no 1280x720 bag: the replay step makes it and did not"
  ros_env
  read -r multitask _ < "$work/replay_input/checkpoints.txt"
  python -P -m mtl_perception.replay.multicam_bench --out "$work/multicam" --cameras 4 --bag "$work/replay_input/bag" \
    --checkpoint "$multitask" --params "$work/replay_input/params.yaml" --device "$device" --max-batch 0 4 \
    || fail "mtl_perception.replay.multicam_bench exited $?"
  cp "$work/multicam/report.md" "$out/multicam.md" || fail "no multicam report"
}
export -f step_install step_build step_cuda_tests step_bench_resnet50 step_bench_mobilenet_v2 step_bench_compiled step_replay \
  step_multicam step_engines

log "dry=$dry out=$out work=$work budget=${budget_s}s steps: $steps"
if [ "$dry" = 1 ] && [ ! -f "$repo_root/.ws/.mtl_perception_build_stamp" ]; then
  log "dry run needs the dev environment: run 'make setup' first"
fi
run_step install 120 step_install
run_step build 180 step_build
run_step cuda_tests 150 step_cuda_tests
run_step bench_resnet50 150 step_bench_resnet50
run_step bench_mobilenet_v2 120 step_bench_mobilenet_v2
run_step engines 120 step_engines
run_step replay 240 step_replay
run_step bench_compiled 300 step_bench_compiled
run_step multicam 180 step_multicam
report
log "done in $(( $(date +%s) - started )) s; results in $out: $(ls "$out" | tr '\n' ' ')"
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || rm -rf "$work"
exit $failed
