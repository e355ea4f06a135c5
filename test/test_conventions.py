"""Project conventions without DDS: class ids and LabelInfo, the segmentation class limit, error-log
throttling, /diagnostics levels, and module boundaries (import cycles, what overlay_node loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _label_info(ids_and_names):
    return SimpleNamespace(class_map=[SimpleNamespace(class_id=i, class_name=n) for i, n in ids_and_names])


def test_class_ids_in_both_formats_map_to_the_same_indices():
    from mtl_perception.vision_labels import detection_class_id, detection_labels

    names = ["person", "car", "tree"]
    assert [detection_class_id(i, names, "name") for i in (2, 0)] == ["tree", "person"]
    assert [detection_class_id(i, names, "index") for i in (2, 0)] == ["2", "0"]
    np.testing.assert_array_equal(detection_labels(["tree", "0", "car", "2", "3", "boat", "", "257"], names),
                                  [2, 0, 1, 2, -1, -1, -1, -1])


def test_label_info_is_one_task_with_ids_0_to_n_minus_1():
    from mtl_perception.vision_labels import label_info_to_names

    assert label_info_to_names(_label_info([(1, "road"), (0, "background")])) == ("background", "road")
    with pytest.raises(ValueError, match="0..N-1"):  # the old combined message: detection ids from 256
        label_info_to_names(_label_info([(0, "background"), (1, "road"), (256, "person"), (257, "car")]))
    with pytest.raises(ValueError, match="without repeats"):
        label_info_to_names(_label_info([(0, "a"), (0, "b")]))


def test_more_than_255_segmentation_classes_are_rejected_at_config_time():
    from mtl_perception.models import ModelConfig

    assert ModelConfig(tasks=("segmentation",), num_seg_classes=255).num_seg_classes == 255
    with pytest.raises(ValueError, match="num_seg_classes must be <= 255: masks are mono8"):
        ModelConfig(tasks=("segmentation",), num_seg_classes=256)
    assert ModelConfig(tasks=("detection",), num_seg_classes=300).num_det_classes == 20  # no mask, no limit


class _Lines:
    def __init__(self):
        self.lines = []

    def error(self, line):
        self.lines.append(line)


def test_error_log_throttles_per_kind_keeps_the_detail_and_stays_bounded():
    import time

    from mtl_perception.ros.error_log import ThrottledErrorLog, error_kind

    log = _Lines()
    errors = ThrottledErrorLog(log, period=0.3)
    for size in range(60):  # 60 bad frames that differ only in byte counts: one line
        errors.error(f"dropped frame: bad input image: image data has {1000 + size} bytes, expected 7200")
    errors.error("dropped frame: bad input image: unsupported image encoding 'yuv'")  # another kind
    assert log.lines == ["dropped frame: bad input image: image data has 1000 bytes, expected 7200",
                         "dropped frame: bad input image: unsupported image encoding 'yuv'"]
    time.sleep(0.35)
    errors.error("dropped frame: bad input image: image data has 5 bytes, expected 7200")
    assert log.lines[-1] == ("dropped frame: bad input image: image data has 5 bytes, expected 7200 "
                             "(59 more like it since the last report)")
    assert error_kind("cannot decode (<_io.BytesIO object at 0x7f3a2b1c>, 187 bytes)") == \
        "cannot decode (<_io.BytesIO object at #>, # bytes)"
    for index in range(1000):
        errors.error(f"kind {chr(65 + index % 26)}{chr(65 + index // 26 % 26)}{chr(65 + index // 676)}: detail")
    assert len(errors) == 64


@pytest.mark.parametrize("state, window, slow_ms, level, message", [
    ("unconfigured", dict(processed=0, dropped=0, failed=0, latency_p50_ms=float("nan")), 200.0, "ERROR", "unconfigured"),
    ("inactive", dict(processed=0, dropped=0, failed=0, latency_p50_ms=float("nan")), 200.0, "WARN", "inactive"),
    ("active", dict(processed=0, dropped=4, failed=4, latency_p50_ms=float("nan")), 200.0, "ERROR",
     "failing: 4 frames failed, none served"),
    ("active", dict(processed=9, dropped=3, failed=0, latency_p50_ms=20.0), 200.0, "WARN",
     "dropping frames (3 in the last window)"),
    ("active", dict(processed=9, dropped=0, failed=0, latency_p50_ms=250.0), 200.0, "WARN",
     "slow: latency p50 250.0 ms > 200 ms"),
    ("active", dict(processed=9, dropped=0, failed=0, latency_p50_ms=250.0), 0.0, "OK", "ok"),
    ("active", dict(processed=0, dropped=0, failed=0, latency_p50_ms=float("nan")), 200.0, "OK",
     "ok, no images in the last window"),
])
def test_diagnostic_levels(state, window, slow_ms, level, message):
    pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs is not importable: run 'make setup'")
    from diagnostic_msgs.msg import DiagnosticStatus

    from mtl_perception.ros.diagnostics import health_status

    status = health_status("/n: inference", "cpu", state, {"fps": 9.0, **window}, slow_ms, {"model": "m"})
    assert (status.level, status.message) == (getattr(DiagnosticStatus, level), message)
    values = {kv.key: kv.value for kv in status.values}
    assert values["state"] == state and values["model"] == "m" and values["dropped_in_window"] == str(window["dropped"])


def test_frame_health_window_counts_and_resets():
    pytest.importorskip("diagnostic_msgs", reason="diagnostic_msgs is not importable: run 'make setup'")
    from mtl_perception.ros.diagnostics import FrameHealth

    health = FrameHealth()
    for latency in (30.0, 10.0, 20.0):
        health.processed(latency)
    health.dropped()
    health.failed("bad input image: truncated")
    window = health.window()
    assert (window["processed"], window["dropped"], window["failed"], window["latency_p50_ms"]) == (3, 2, 1, 20.0)
    assert health.last_error == "bad input image: truncated"
    again = health.window()
    assert (again["processed"], again["dropped"], again["fps"]) == (0, 0, 0.0)


def _package_imports(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> modules of the same package it imports anywhere (functions included)."""
    graph = {}
    for path in package_dir.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module if node.level == 0 else f"{package}.{node.module}" if node.level == 1 else ""
                if name.startswith(package + "."):
                    deps.add(name[len(package) + 1:].split(".")[0])
        graph[path.stem] = deps - {path.stem, "__init__"}
    return graph


def test_bag_modules_import_each_other_without_cycles():
    graph = _package_imports(REPO_ROOT / "mtl_perception" / "bags", "mtl_perception.bags")
    assert "frames_to_bag" in graph["demo"] and "make_bag" not in graph["demo"]

    def visit(module, path):
        for dep in graph.get(module, ()):
            assert dep not in path, f"import cycle: {' -> '.join([*path, dep])}"
            visit(dep, [*path, dep])

    for module in graph:
        visit(module, [module])


def test_overlay_node_loads_no_bag_tooling_and_no_torch():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    script = ("import sys, mtl_perception.ros.overlay_node; "
              "print(sorted(m for m in ('rosbags', 'torch', 'mtl_perception.bags', 'mtl_perception.checkpoint') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
