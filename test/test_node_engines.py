"""The nodes' engines over real DDS: onnxruntime fp32 and int8 outputs equal the Predictor of the
same engine (raw and compressed input), the engine in InferenceStats and /diagnostics, the
export cache across configures, bad backend/precision pairs, and threads read from /proc.

The torch engine's node-equals-Predictor tests are in test_nodes.py (EXACT_PARAMS there).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

import ros_harness
from node_fixtures import (change_state, get_state, image_msg, make_tiny_checkpoints, node_command, reliable_qos,
                           sample_image, wait_for_stamp)

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("ros_node")

EXACT_PARAMS = ("device:=cpu", "cpu_threads:=1", "score_threshold:=0.05", "class_id_format:=index",
                "publish_overlay:=false", "reliability:=reliable", "diagnostics_slow_ms:=0.0")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("node_engines"))


@pytest.fixture(scope="module")
def int8_model(checkpoints, tmp_path_factory):
    """The tiny multitask model quantized on 8 frames of an image folder (mtl-export --int8's path)."""
    from PIL import Image

    from mtl_perception.engines.calibration import calibration_set
    from mtl_perception.export import export_int8

    folder = tmp_path_factory.mktemp("calibration")
    for index in range(8):
        Image.fromarray(sample_image(90, 140, seed=200 + index)).save(folder / f"{index}.png")
    out = folder.parent / "tiny_multitask.int8.onnx"
    export_int8(checkpoints["multitask"], out, calibration_set(folder, 8))
    return out


# namespace -> (checkpoint key, backend, precision, transport)
ENGINE_NODES = {"eo": ("multitask", "onnxruntime", "fp32", "raw"), "eoc": ("multitask", "onnxruntime", "fp32", "compressed"),
                "e8": ("int8", "auto", "int8", "raw"), "e8c": ("int8", "auto", "int8", "compressed")}


@pytest.fixture(scope="module")
def engine_nodes(tmp_path_factory, checkpoints, int8_model, ros_node):
    log_dir = tmp_path_factory.mktemp("engine_nodes")
    processes = {}
    for namespace, (model, backend, precision, transport) in ENGINE_NODES.items():
        path = int8_model if model == "int8" else checkpoints[model]
        command = node_command("multitask_node", f"checkpoint:={path}", *EXACT_PARAMS, f"backend:={backend}",
                               f"precision:={precision}", f"input_transport:={transport}")
        command += ["-r", f"__ns:=/{namespace}", "-r", f"image:=/{namespace}/camera"]
        processes[namespace] = ros_harness.start_process(command, log_dir / f"{namespace}.log", cwd=log_dir)
    for namespace, (*_, transport) in ENGINE_NODES.items():
        ros_node.wait_for_subscriber(f"/{namespace}/camera" + ("/compressed" if transport == "compressed" else ""),
                                     timeout=120)
    yield processes
    for namespace, process in processes.items():
        print(f"{namespace} exited {process.stop()}:\n{process.output()[-3000:]}")


def _predictor(path, backend, precision):
    from mtl_perception.postprocess import DetectionParams
    from mtl_perception.predictor import Predictor

    return Predictor(path, device="cpu", backend=backend, precision=precision, threads=1,
                     detection=DetectionParams(score_threshold=0.05))


def _collectors(ros_node, prefix):
    from mtl_perception.msg import InferenceStats
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    return {"segmentation": ros_node.collect(f"{prefix}/segmentation", Image, reliable_qos()),
            "detections": ros_node.collect(f"{prefix}/detections", Detection2DArray, reliable_qos()),
            "stats": ros_node.collect(f"{prefix}/stats", InferenceStats, reliable_qos())}


def _assert_equal(outputs, prediction):
    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.vision_labels import detections_to_arrays

    np.testing.assert_array_equal(image_to_array(outputs["segmentation"]), prediction.mask)
    boxes, class_ids, scores = detections_to_arrays(outputs["detections"])
    assert class_ids == [str(int(label)) for label in prediction.labels]
    np.testing.assert_allclose(boxes, prediction.boxes, atol=1e-4)
    np.testing.assert_allclose(scores, prediction.scores, atol=1e-6)


@pytest.mark.parametrize("namespace", list(ENGINE_NODES))
def test_node_outputs_equal_the_predictor_of_the_same_engine(ros_node, engine_nodes, checkpoints, int8_model, namespace):
    from sensor_msgs.msg import CompressedImage, Image

    from mtl_perception.ros.image_msg_builders import array_to_compressed_msg

    model, backend, precision, transport = ENGINE_NODES[namespace]
    predictor = _predictor(int8_model if model == "int8" else checkpoints[model], backend, precision)
    image = sample_image(110, 170, seed=31)
    prediction = predictor.predict(image)
    assert len(prediction.boxes) >= 2
    collectors = _collectors(ros_node, f"/{namespace}")
    if transport == "compressed":
        publisher = ros_node.node.create_publisher(CompressedImage, f"/{namespace}/camera/compressed", reliable_qos(5))
        msg = array_to_compressed_msg(image, fmt="png")  # lossless: the node decodes the same pixels
    else:
        publisher = ros_node.node.create_publisher(Image, f"/{namespace}/camera", reliable_qos(5))
        msg = image_msg(image, 0)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 900, 123456
    try:
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(msg), 900)
        _assert_equal(outputs, prediction)
        stats = outputs["stats"]
        assert (stats.engine, stats.execution_provider, stats.precision) == ("onnxruntime", "CPUExecutionProvider",
                                                                             precision)
    finally:
        for collector in collectors.values():
            collector.close()
        ros_node.node.destroy_publisher(publisher)
    log = engine_nodes[namespace].output()
    assert f"engine onnxruntime CPUExecutionProvider {precision}" in log
    if model == "int8":
        assert str(int8_model) in log


def test_diagnostics_name_the_engine_provider_and_precision(ros_node, engine_nodes):
    from diagnostic_msgs.msg import DiagnosticArray

    deadline = time.monotonic() + 30
    collector = ros_node.collect("/diagnostics", DiagnosticArray, reliable_qos())
    try:
        while time.monotonic() < deadline:
            statuses = [s for m in list(collector.messages) for s in m.status if s.name.startswith("/e8/multitask_node")]
            if statuses:
                break
            time.sleep(0.2)
    finally:
        collector.close()
    assert statuses, "no /diagnostics from /e8/multitask_node"
    values = {v.key: v.value for v in statuses[-1].values}
    assert (values["engine"], values["execution_provider"], values["precision"]) == ("onnxruntime", "CPUExecutionProvider",
                                                                                    "int8")
    assert values["engine_file"].endswith("tiny_multitask.int8.onnx")


def test_a_second_configure_reuses_the_cached_export(ros_node, checkpoints, launch_process, tmp_path):
    from lifecycle_msgs.msg import Transition

    cache = tmp_path / "cache"
    target = "/ecache/detection_node"
    process = launch_process(node_command("detection_node", f"checkpoint:={checkpoints['detection']}", "device:=cpu",
                                          "backend:=onnxruntime", f"engine_cache_dir:={cache}", "managed:=true")
                             + ["-r", "__ns:=/ecache"], name="engine_cache")
    assert get_state(ros_node.node, target) == "unconfigured"
    assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE)
    [model] = cache.glob("*.onnx")
    stamp = model.stat().st_mtime_ns
    assert change_state(ros_node.node, target, Transition.TRANSITION_CLEANUP)
    assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE)
    output = process.output()
    assert len(re.findall(r"exported to the engine cache in [0-9.]+ s", output)) == 1
    assert f"(from the engine cache: {model})" in output
    assert list(cache.glob("*.onnx")) == [model] and model.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("arguments, words", [
    (("backend:=torch", "precision:=int8"), ("'int8'", "'torch'")),
    (("backend:=onnxruntime", "precision:=bf16"), ("'bf16'", "'onnxruntime'")),
    (("backend:=onnxruntime", "precision:=int8"), ("'int8'", "calibration")),  # int8 from a .pt needs frames
])
def test_a_bad_backend_precision_pair_fails_configure_naming_both(checkpoints, tmp_path, arguments, words):
    import subprocess

    result = subprocess.run(node_command("multitask_node", f"checkpoint:={checkpoints['multitask']}", "device:=cpu",
                                         f"engine_cache_dir:={tmp_path}", *arguments) + ["-r", "__ns:=/epair"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "cannot load the model" in text
    assert all(word in text for word in words), text[-2000:]
    assert not list(tmp_path.glob("*.onnx")), "refused before exporting"


def _threads(pid: int, samples: int = 10) -> int:
    """The process's settled thread count: the fewest of ``samples`` reads 0.1 s apart (a thread
    that lives for a moment, e.g. one of DDS's or a logger's, must not count)."""
    counts = []
    for _ in range(samples):
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
        counts.append(int(status["Threads"]))
        time.sleep(0.1)
    return min(counts)


def test_onnxruntime_threads_follow_cpu_threads(ros_node, checkpoints, launch_process, tmp_path):
    """Read from /proc: the threads a live node gains at configure (model load and warm-up; the
    onnxruntime node gets a ready .onnx, so nothing is exported in it), at cpu_threads 1 and 3.
    From 1 to 3 the onnxruntime node grows by exactly 2 threads more than the torch node: its
    session's intra-op pool (N - 1 workers beside the calling thread; inter-op 1, no pool). Total
    counts are not compared: which torch pools start depends on the ops a node ran."""
    from lifecycle_msgs.msg import Transition

    from mtl_perception.export import export_onnx

    model = tmp_path / "segmentation.onnx"
    export_onnx(checkpoints["segmentation"], model)
    added = {}
    for backend, checkpoint in (("onnxruntime", model), ("torch", checkpoints["segmentation"])):
        for threads in (1, 3):
            namespace = f"/eth_{backend}_{threads}"
            target = f"{namespace}/segmentation_node"
            process = launch_process(node_command("segmentation_node", f"checkpoint:={checkpoint}", "device:=cpu",
                                                  f"backend:={backend}", f"cpu_threads:={threads}", "managed:=true")
                                     + ["-r", f"__ns:={namespace}"], name=f"threads_{backend}_{threads}")
            assert get_state(ros_node.node, target) == "unconfigured"
            before = _threads(process.popen.pid)
            assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE), process.output()[-2000:]
            added[backend, threads] = _threads(process.popen.pid) - before
    # The torch node's own growth from 1 to 3 threads (its intra-op pools) is in both; onnxruntime adds
    # its pool's 2 workers on top, and nothing at cpu_threads 1.
    growth = {backend: added[backend, 3] - added[backend, 1] for backend in ("onnxruntime", "torch")}
    assert growth["onnxruntime"] - growth["torch"] == 2, added
