"""scripts/gpu_check.sh dry run (GPU_CHECK_DRY=1) on this CPU, so the GPU check cannot rot
between the sessions that get a GPU; and the wheel slimming of scripts/gpu_wheels.py.

The dry run is the same script with tiny counts: its files must hold real content (every
requested bench variant with its figures, skipped CUDA-only pieces saying why, the wheel
install having installed the test's own wheel), not just exit 0.
"""

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
OUT_FILES = {"summary.md", "results.json", "bench.md", "replay.md", "logs.txt"}
PROBE = ("gpu_check_probe", "1.2.3")  # a wheel made here, so its name and version are ours
PROBE_LIB = "libgpucheckprobe.so.1.0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_probe_wheels(folder: Path) -> Path:
    """One pure-Python wheel with a module and a shared-library file, and its links.txt line."""
    name, version = PROBE
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 7\n",
        f"{name}-{version}.data/data/lib/{PROBE_LIB}": b"not really ELF\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([_record_line(k, v) for k, v in files.items()] + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for entry, data in files.items():
            archive.writestr(entry, data)
        archive.writestr(f"{info}/RECORD", record)
    (folder / "links.txt").write_text(f"{wheel.name} lib/libgpucheckprobe.so.1 {PROBE_LIB}\n")
    (folder / "roots.txt").write_text(f"{name}\n")
    return folder


def run_dry(tmp_path: Path, steps: str, timeout: int) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = dict(os.environ, GPU_CHECK_DRY="1", OUT=str(out), GPU_CHECK_STEPS=steps,
               GPU_CHECK_WHEELS=str(make_probe_wheels(tmp_path / "wheels")), TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, out


def _steps(results: dict) -> dict:
    return {s["step"]: s for s in results["steps"]}


def _targets(results: dict) -> dict:
    return {t["key"]: t for t in results["targets"]}


def test_dry_run_installs_tests_benches_and_reports(tmp_path):
    steps = "install build cuda_tests bench_mobilenet_v2 bench_compiled"
    proc, out = run_dry(tmp_path, steps, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == OUT_FILES
    results = json.loads((out / "results.json").read_text())
    assert results["dry"] is True
    by_step = _steps(results)
    assert list(by_step) == steps.split(), "only the requested steps, in the script's order"

    # install: the probe wheel went into a fresh venv over the dev venv, its library link resolves.
    assert by_step["install"]["status"] == "ok"
    assert f"gpu-check-probe=={PROBE[1]}" in results["installed"]["installed"]
    assert [(Path(link["path"]).name, link["resolves"]) for link in results["links"]] == [("libgpucheckprobe.so.1", True)]
    assert by_step["build"]["status"] == "skipped" and "dry run" in by_step["build"]["reason"]
    assert by_step["bench_compiled"]["status"] == "skipped" and "torch.compile" in by_step["bench_compiled"]["reason"]

    # cuda_tests: chosen by their CUDA skipif marker (a CPU test named after CUDA is not one).
    tests = {t["test"]: t for t in results["cuda_tests"]}
    assert "test.test_models::test_cuda_predictor_matches_cpu[fp16-True]" in tests
    assert not [name for name in tests if "cuda_absent" in name]
    assert all(t["outcome"] == "skipped" and "CUDA" in t["message"] for t in tests.values()), tests

    # bench: every requested variant, in order; what can't run on a CPU says why.
    bench = results["bench"]["bench_mobilenet_v2"]
    assert bench["complete"] is True
    expected = [(p, m) for p in ("fp32", "fp16", "bf16") for m in ("eager", "cuda_graph")]
    assert [(v["precision"], v["mode"]) for v in bench["variants"]] == expected
    variants = {(v["precision"], v["mode"]): v for v in bench["variants"]}
    for precision in ("fp32", "bf16"):
        variant = variants[(precision, "eager")]
        assert variant["status"] == "ok", variant
        for side in ("multitask", "naive"):
            figures = variant["results"][side]
            assert figures["precision"] == precision and figures["device"] == "cpu"
            assert figures["iters"] == 2 and figures["frame_size"] == [720, 1280] and figures["input_size"] == [64, 64]
            assert figures["latency_ms"]["count"] == 2 and figures["latency_ms"]["p50"] > 0
            assert figures["setup_s"] > 0 and figures["memory_kind"] == "rss_growth"
            assert set(figures["stage_ms_p50"]) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
        multitask, naive = variant["results"]["multitask"], variant["results"]["naive"]
        # The naive pair holds the trunk twice: the difference is exactly one MobileNetV2 trunk.
        assert naive["parameters"] - multitask["parameters"] == _trunk_parameters("mobilenet_v2")
        assert math.isclose(variant["ratios"]["speed"], naive["latency_ms"]["p50"] / multitask["latency_ms"]["p50"])
    for precision in ("fp32", "fp16", "bf16"):
        assert variants[(precision, "cuda_graph")]["status"] == "skipped"
        assert variants[(precision, "cuda_graph")]["reason"] == "cuda_graph needs a CUDA device"
    assert variants[("fp16", "eager")]["status"] == "skipped" and "fp16" in variants[("fp16", "eager")]["reason"]
    assert "the same 2 frames of 720x1280" in bench["budget"]["line"]

    # summary: every target has a row; without a ResNet-50 fp16 or replay figure they are MISSING, saying why.
    targets = _targets(results)
    assert len(targets) == 7
    assert targets["predictor_fp16_p50_ms"]["verdict"] == "MISSING"
    assert targets["node_non_network_ms"]["verdict"] == "MISSING"
    assert "replay step did not run" in targets["node_non_network_ms"]["source"]
    summary = (out / "summary.md").read_text()
    assert "Dry run on the CPU" in summary
    assert summary.count("| MISSING |") == 7
    assert "| bench_compiled | skipped |" in summary
    assert "bench_mobilenet_v2" in (out / "bench.md").read_text()
    assert "===== bench_mobilenet_v2 =====" in (out / "logs.txt").read_text()


def _trunk_parameters(trunk: str) -> int:
    from mtl_perception.models.trunks import Trunk

    return sum(p.numel() for p in Trunk(trunk).parameters())


@pytest.mark.slow
def test_dry_run_replays_a_1280x720_bag_through_both_graphs(tmp_path):
    """ResNet-50 bench and the ROS replay (lockstep, 30 Hz): ~3 minutes on 2 cores."""
    proc, out = run_dry(tmp_path, "bench_resnet50 replay", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    by_step = _steps(results)
    assert by_step["replay"]["status"] == "ok" and "peak" in by_step["replay"]["reason"]
    multitask = results["replay"]["multitask"]
    assert multitask["frames"]["published"] == 3 and multitask["frames"]["answered"] == 3
    assert multitask["device"] == "cpu" and results["replay"]["compare"]["budget"]["mode"] == "shared"
    (row,) = multitask["fixed_rate"]
    assert row["rate_hz"] == 30.0 and 25 <= row["published"] <= 35  # 1 s at 30 Hz
    targets = _targets(results)
    assert targets["node_30hz_p50_ms"]["value"] == row["latency_ms"]["p50"]
    stats = multitask["nodes"]["multitask_node"]
    # The node's own per-frame figure (InferenceStats total - network, p50), below its total.
    assert targets["node_non_network_ms"]["value"] == stats["non_network_ms_p50"]
    assert 0 < stats["non_network_ms_p50"] < stats["total_ms_p50"]
    assert targets["node_non_network_ms"]["verdict"] == "not judged (CPU dry run)"
    bench = results["bench"]["bench_resnet50"]["variants"][0]
    multitask_b, naive_b = bench["results"]["multitask"], bench["results"]["naive"]
    # fp32 checkpoints: file size follows the parameter count (the paper's 140 vs 235 MB).
    assert math.isclose(targets["size_ratio"]["value"], naive_b["parameters"] / multitask_b["parameters"], rel_tol=0.01)
    assert "| replay | ok |" in (out / "summary.md").read_text()
    assert "Multitask vs naive, replayed through ROS 2" in (out / "replay.md").read_text()


def test_slimmed_wheel_keeps_one_copy_of_a_library_and_a_valid_record(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_wheels
    finally:
        sys.path.pop(0)
    library = b"\x00library bytes\x00" * 1000
    wheel = tmp_path / "ros_thing-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for name in ("libthing.so", "libthing.so.1", "libthing.so.1.0.3"):
            archive.writestr(f"ros_thing-1.0.data/data/lib/{name}", library)
        archive.writestr("ros_thing-1.0.data/data/lib/libother.so", b"other")
        archive.writestr("ros_thing/__init__.py", b"")
        archive.writestr("ros_thing-1.0.dist-info/RECORD", b"stale\n")
    saved, links = gpu_wheels.slim_wheel(wheel, strip=False)
    assert links == [("lib/libthing.so", "libthing.so.1.0.3"), ("lib/libthing.so.1", "libthing.so.1.0.3")]
    assert saved > 0
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(archive.namelist())
        record = archive.read("ros_thing-1.0.dist-info/RECORD").decode().splitlines()
        assert archive.read("ros_thing-1.0.data/data/lib/libthing.so.1.0.3") == library
    assert names == ["ros_thing-1.0.data/data/lib/libother.so", "ros_thing-1.0.data/data/lib/libthing.so.1.0.3",
                     "ros_thing-1.0.dist-info/RECORD", "ros_thing/__init__.py"]
    assert _record_line("ros_thing-1.0.data/data/lib/libthing.so.1.0.3", library) in record
    assert _record_line("ros_thing-1.0.data/data/lib/libother.so", b"other") in record
    assert record[-1] == "ros_thing-1.0.dist-info/RECORD,,"


def _side(p50_ms: float, memory_mb: float, checkpoint_mb: float) -> dict:
    return {"status": "ok", "latency_ms": {"p50": p50_ms}, "memory_mb": memory_mb, "memory_kind": "cuda_max_allocated",
            "checkpoint_mb": checkpoint_mb, "frame_size": [720, 1280]}


def _variant(precision: str, mode: str, multitask: dict, naive: dict) -> dict:
    ratios = {"speed": naive["latency_ms"]["p50"] / multitask["latency_ms"]["p50"],
              "memory": naive["memory_mb"] / multitask["memory_mb"], "size": naive["checkpoint_mb"] / multitask["checkpoint_mb"]}
    return {"precision": precision, "mode": mode, "status": "ok", "reason": None,
            "results": {"multitask": multitask, "naive": naive}, "ratios": ratios}


def test_report_judges_gpu_figures_against_the_targets(tmp_path):
    """The verdicts of a GPU run, from hand-made step outputs (the dry run never judges)."""
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "bench_resnet50").mkdir(parents=True)
    (work / "replay" / "multitask").mkdir(parents=True)
    bench = {"budget": {"line": "Budget: both sides on NVIDIA H200"}, "variants": [
        _variant("fp32", "eager", _side(5.0, 900, 139.3), _side(9.0, 1500, 229.3)),
        _variant("fp16", "eager", _side(3.4, 500, 139.3), _side(6.0, 800, 229.3)),
        _variant("fp16", "cuda_graph", _side(2.5, 520, 139.3), _side(4.5, 850, 229.3)),
        {"precision": "bf16", "mode": "cuda_graph", "status": "failed", "reason": "multitask: boom", "results": {}},
    ]}
    (work / "bench_resnet50" / "bench.json").write_text(json.dumps(bench))
    replay = {"fixed_rate": [{"rate_hz": 10.0, "latency_ms": {"p50": 1.0}, "published": 60, "answered": 60},
                             {"rate_hz": 30.0, "latency_ms": {"p50": 5.5}, "published": 150, "answered": 149,
                              "dropped": 1, "lost": 0}],
              "nodes": {"multitask_node": {"non_network_ms_p50": 1.2, "total_ms_p50": 3.7, "inference_ms_p50": 2.5}}}
    (work / "replay" / "multitask" / "report.json").write_text(json.dumps(replay))
    (work / "steps.jsonl").write_text(json.dumps({"step": "replay", "status": "ok", "rc": 0, "seconds": 80.0,
                                                  "reason": None}) + "\n")
    report = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check_report.py"), "--work", str(work),
                             "--out", str(out), "--dry", "0", "--budget-s", "450"], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    targets = _targets(json.loads((out / "results.json").read_text()))
    # The fastest fp16 variant (cuda_graph, 2.5 ms) is the headline; its ratios are judged.
    assert targets["predictor_fp16_p50_ms"]["value"] == 2.5 and targets["predictor_fp16_p50_ms"]["verdict"] == "PASS"
    assert "fp16 cuda_graph" in targets["predictor_fp16_p50_ms"]["source"]
    assert targets["speed_ratio"]["value"] == pytest.approx(1.8) and targets["speed_ratio"]["verdict"] == "PASS"
    assert targets["memory_ratio"]["value"] == pytest.approx(850 / 520) and targets["memory_ratio"]["verdict"] == "PASS"
    assert targets["size_ratio"]["value"] == pytest.approx(229.3 / 139.3) and targets["size_ratio"]["verdict"] == "FAIL"
    assert targets["node_30hz_p50_ms"]["value"] == 5.5 and targets["node_30hz_p50_ms"]["verdict"] == "PASS"
    assert targets["node_30hz_drops"]["value"] == 1 and targets["node_30hz_drops"]["verdict"] == "FAIL"
    assert targets["node_non_network_ms"]["value"] == 1.2 and targets["node_non_network_ms"]["verdict"] == "PASS"
    summary = (out / "summary.md").read_text()
    assert "| 1.646 x (>= 1.65) | FAIL |" in summary
    assert "| 1 frames (<= 0) | FAIL |" in summary


def test_dry_engine_step_runs_onnxruntime_on_the_cpu_ep_and_says_the_cuda_ep_is_absent(tmp_path):
    import onnxruntime

    proc, out = run_dry(tmp_path, "engines", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    step = _steps(results)["engines"]
    assert step["status"] == "ok"
    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()  # this CPU's onnxruntime
    assert "no CUDAExecutionProvider" in step["reason"] and "CPUExecutionProvider" in step["reason"]
    bench = results["bench"]["bench_engines_cpu"]
    engines = {(v["engine"], v["status"]) for v in bench["variants"]}
    assert engines == {("torch", "ok"), ("onnxruntime", "ok")}
    ort = next(v for v in bench["variants"] if v["engine"] == "onnxruntime")
    assert ort["results"]["multitask"]["execution_provider"] == "CPUExecutionProvider"
    assert "bench_engines_cuda" not in results["bench"]
    text = (out / "bench.md").read_text()
    assert "## Engines side by side" in text and "| onnxruntime | CPUExecutionProvider | fp32 |" in text
