# mtl_perception developer entry points (pip-wheel ROS 2, no system ROS needed).
#   make setup      create .venv and build the colcon workspace .ws/ (idempotent)
#   make build      incremental colcon build (needed after adding files)
#   make test       setup + build, then the whole pytest suite
#   make test-fast  the same without tests marked slow
# Real ROS 2 users: colcon build in their own workspace instead (README, "On a real ROS 2 machine").

SHELL := /bin/bash
.DEFAULT_GOAL := test

REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV ?= $(REPO_ROOT)/.venv
PYTHON ?= python3.11
WS := $(REPO_ROOT)/.ws
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k codec -x'
PYTEST_ARGS ?=

VENV_STAMP := $(VENV)/.mtl_perception_setup_stamp
WS_STAMP := $(WS)/.mtl_perception_build_stamp

.PHONY: setup build test test-fast bench demo learn-report demo-checkpoints gpu-wheels gpu-check-dry clean

setup: $(VENV_STAMP) $(WS_STAMP)

# Reinstalls whenever a requirements file or the setup scripts change.
$(VENV_STAMP): $(wildcard requirements/*.txt) scripts/setup_venv.sh scripts/fix_ros_cmake_paths.sh
	PYTHON=$(PYTHON) scripts/setup_venv.sh $(VENV)
	touch $@

$(WS_STAMP): $(VENV_STAMP)
	VENV=$(VENV) scripts/build_ws.sh
	touch $@

build: $(VENV_STAMP)
	VENV=$(VENV) scripts/build_ws.sh
	touch $(WS_STAMP)

# pytest exits 5 when it collected no tests: that is a failure here too.
define run_pytest
	source scripts/ros_env.sh && cd $(REPO_ROOT) && \
	python -m pytest -p no:cacheprovider $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest ran no tests" >&2; fi; exit $$rc
endef

test: setup build
	$(call run_pytest,)

test-fast: setup build
	$(call run_pytest,-m "not slow")

# Table II without ROS: multitask vs naive pair, latency/memory/size ratios (bench_output/).
# ENGINES=torch,onnxruntime,int8: the engines side by side on the demo checkpoints, one thread
# pinned to the last CPU, with int8's held-out accuracy against fp32.
ENGINES ?=
DEMO_CHECKPOINTS = checkpoints/demo_multitask.pt checkpoints/demo_segmentation.pt checkpoints/demo_detection.pt
bench: setup build
	source scripts/ros_env.sh && python -P -m mtl_perception.bench --out bench_output \
		$(if $(ENGINES),--engines $(ENGINES) --checkpoints $(DEMO_CHECKPOINTS) --threads 1 --cpus last) $(BENCH_ARGS)

# The main job: demo bag from real aerial images, replayed through the multitask graph
# and the naive graph over ROS 2 at one compute budget (BUDGET=shared, the default, or
# per-network); report, plots and overlays in demo_output/. ENGINE=auto (the YAML's: onnxruntime
# on the CPU) | torch | onnxruntime | int8; the multitask graph is replayed once more with
# ENGINE_BASELINE (torch) for the engine's speed-up in the same run (ENGINE_BASELINE= skips it).
BUDGET ?= shared
ENGINE ?= auto
ENGINE_BASELINE ?= torch
demo: setup build
	source scripts/ros_env.sh && python -P -m mtl_perception.replay.demo --out demo_output --budget $(BUDGET) \
		--engine $(ENGINE) $(if $(ENGINE_BASELINE),--engine-baseline $(ENGINE_BASELINE)) $(DEMO_ARGS)

# Real-data learning report, two runs at a time: learn_output/learn_report.md, .json and
# learning_curves.png; per seed (0, 1) segmentation-only, detection-only, multitask, and multitask
# with the single-task networks as teachers (8 runs; about 90 minutes on 2 cores at the recipe's
# 1000 steps, LEARN_ARGS=--steps 600 about 55). docs/learning/ holds the committed one.
LEARN_ARGS ?=
learn-report: setup build
	source scripts/ros_env.sh && python -P -m mtl_perception.training.learn_report --out learn_output --jobs 2 $(LEARN_ARGS)

# The same runs; replaces checkpoints/demo_*.pt only if multitask + teachers beats the shipped
# multitask model on both held-out means, and publishes the report to docs/learning/
demo-checkpoints: setup build
	source scripts/ros_env.sh && python -P -m mtl_perception.training.learn_report --out learn_output --checkpoints checkpoints \
		--publish docs/learning --jobs 2 $(LEARN_ARGS)

# The cp312 wheels the GPU device machine lacks, into .gpu_wheels/ (gitignored); prints
# their size with the tree's against the 64 MiB that travel (docs/gpu.md).
gpu-wheels: $(VENV_STAMP)
	VENV=$(VENV) scripts/gpu_wheels.sh

# scripts/gpu_check.sh on this CPU with tiny iteration counts (what test/test_gpu_check.py runs).
gpu-check-dry: setup build
	GPU_CHECK_DRY=1 OUT=$(REPO_ROOT)/gpu_check_dry scripts/gpu_check.sh

clean:
	rm -rf $(WS)
