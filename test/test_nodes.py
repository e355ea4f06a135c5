"""The inference nodes as users run them: real processes, real DDS on loopback."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import ros_harness
from node_fixtures import (DET_NAMES, SEG_NAMES, change_state, get_state, image_msg, latched_qos, make_tiny_checkpoints,
                           node_command, reliable_qos, sample_image, sensor_publisher, set_parameters, wait_for_stamp)

pytestmark = pytest.mark.usefixtures("ros_node")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def multitask(tmp_path_factory, checkpoints, ros_node):
    """One multitask_node for the module, on camera topic /mt/camera, namespace /mt."""
    log_dir = tmp_path_factory.mktemp("multitask")
    command = node_command("multitask_node", f"checkpoint:={checkpoints['multitask']}", "device:=cpu",
                           "score_threshold:=0.05") + ["-r", "__ns:=/mt", "-r", "image:=/mt/camera"]
    process = ros_harness.start_process(command, log_dir / "multitask_node.log", cwd=log_dir)
    ros_node.wait_for_subscriber("/mt/camera", timeout=60)
    yield process
    code = process.stop()
    print(f"multitask_node exited {code}:\n{process.output()[-3000:]}")


def _collectors(ros_node, prefix: str, with_overlay: bool = True):
    from mtl_perception.msg import InferenceStats
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    topics = {"segmentation": Image, "segmentation/color": Image, "detections": Detection2DArray, "stats": InferenceStats}
    if with_overlay:
        topics["overlay"] = Image
    return {name: ros_node.collect(f"{prefix}/{name}", msg_type, reliable_qos()) for name, msg_type in topics.items()}


def _close(collectors):
    for collector in collectors.values():
        collector.close()


def _check_contract(outputs: dict, height: int, width: int, stamp_sec: int, frame_id: str):
    for name, msg in outputs.items():
        assert msg.header.stamp.sec == stamp_sec and msg.header.stamp.nanosec == 123456, name
        assert msg.header.frame_id == frame_id, name
    seg = outputs["segmentation"]
    assert (seg.height, seg.width, seg.encoding) == (height, width, "mono8")
    mask = np.frombuffer(bytes(seg.data), np.uint8).reshape(height, seg.step)[:, :width]
    assert mask.max() < len(SEG_NAMES)
    color = outputs["segmentation/color"]
    assert (color.height, color.width, color.encoding) == (height, width, "rgb8")
    detections = outputs["detections"].detections
    assert detections, "the biased tiny model detects something"
    for det in detections:
        box = det.bbox
        x0, x1 = box.center.position.x - box.size_x / 2, box.center.position.x + box.size_x / 2
        y0, y1 = box.center.position.y - box.size_y / 2, box.center.position.y + box.size_y / 2
        assert -1e-3 <= x0 < x1 <= width + 1e-3 and -1e-3 <= y0 < y1 <= height + 1e-3, (x0, y0, x1, y1)
        assert len(det.results) == 1 and det.results[0].hypothesis.class_id in DET_NAMES
        assert 0.0 <= det.results[0].hypothesis.score <= 1.0
        assert det.header.stamp.sec == stamp_sec
    if "overlay" in outputs:
        assert (outputs["overlay"].height, outputs["overlay"].width, outputs["overlay"].encoding) == (height, width, "rgb8")


def test_multitask_node_answers_every_output_with_the_input_header(ros_node, multitask):
    from mtl_perception.msg import InferenceStats
    from vision_msgs.msg import LabelInfo

    collectors = _collectors(ros_node, "/mt")
    publisher = sensor_publisher(ros_node.node, "/mt/camera")
    try:
        for height, width, stamp in ((120, 200, 101), (240, 136, 102)):  # non-square, both orientations
            image = sample_image(height, width, stamp)
            outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, stamp)), stamp)
            _check_contract(outputs, height, width, stamp, "camera_optical")
        stats: InferenceStats = outputs["stats"]
        assert stats.node_name == "/mt/multitask_node" and stats.model_name == "tiny-multitask"
        assert stats.device == "cpu" and stats.precision == "fp32"
        assert stats.inference_ms > 0 and stats.total_ms >= stats.inference_ms
        assert stats.frames_processed >= 2 and stats.frames_received >= stats.frames_processed
        assert stats.gpu_memory_allocated_mb == 0.0
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    # A subscriber that joins late still gets label_info (transient local), with both tasks.
    [info] = ros_node.wait_for_messages("/mt/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
    classes = {(c.class_id, c.class_name) for c in info.class_map}
    assert classes == {(0, "background"), (1, "road"), (2, "building"), (256, "person"), (257, "car")}


def _bad_images():
    from sensor_msgs.msg import Image

    good = image_msg(sample_image(40, 60), 0)
    cases = {}
    cases["unsupported encoding"] = Image(header=good.header, height=40, width=60, encoding="yuv422", step=120, data=bytes(4800))
    cases["step too small"] = Image(header=good.header, height=40, width=60, encoding="rgb8", step=100, data=bytes(4000))
    cases["truncated"] = Image(header=good.header, height=40, width=60, encoding="rgb8", step=180, data=bytes(good.data)[:5000])
    cases["zero size"] = Image(header=good.header, height=0, width=0, encoding="rgb8", step=0, data=b"")
    cases["enormous"] = Image(header=good.header, height=100000, width=100000, encoding="mono8", step=100000, data=bytes(16))
    return cases


def test_bad_frames_are_dropped_with_a_clear_error_and_the_node_keeps_serving(ros_node, multitask):
    collectors = _collectors(ros_node, "/mt", with_overlay=False)
    publisher = sensor_publisher(ros_node.node, "/mt/camera")
    try:
        for index, (case, bad) in enumerate(_bad_images().items()):
            bad_stamp = 200 + 2 * index
            bad.header.stamp.sec = bad_stamp
            for _ in range(3):
                publisher.publish(bad)
                time.sleep(0.2)
            good_stamp = bad_stamp + 1
            image = sample_image(50, 70, good_stamp)
            wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, good_stamp)), good_stamp)
            for name, collector in collectors.items():
                assert not [m for m in collector.messages if m.header.stamp.sec == bad_stamp], f"{case}: {name} published"
        assert multitask.returncode is None, "node died"
        log = multitask.output()
        for fragment in ("yuv422", "step", "truncated", "dropped frame"):
            assert fragment in log.lower() or fragment in log, fragment
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)


def test_runtime_parameters_take_effect_and_invalid_values_are_rejected(ros_node, multitask):
    collectors = _collectors(ros_node, "/mt", with_overlay=False)
    publisher = sensor_publisher(ros_node.node, "/mt/camera")
    try:
        results = set_parameters(ros_node.node, "/mt/multitask_node", {"max_detections": 2, "class_allowlist": ["car"]})
        assert all(r.successful for r in results), [r.reason for r in results]
        image = sample_image(100, 100, 301)
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 301)), 301)
        detections = outputs["detections"].detections
        assert 1 <= len(detections) <= 2 and {d.results[0].hypothesis.class_id for d in detections} == {"car"}
        [bad_class] = set_parameters(ros_node.node, "/mt/multitask_node", {"class_allowlist": ["boat"]})
        assert not bad_class.successful and "boat" in bad_class.reason
        [bad_threshold] = set_parameters(ros_node.node, "/mt/multitask_node", {"score_threshold": 1.5})
        assert not bad_threshold.successful
        [read_only] = set_parameters(ros_node.node, "/mt/multitask_node", {"device": "cuda"})
        assert not read_only.successful
        restored = set_parameters(ros_node.node, "/mt/multitask_node", {"class_allowlist": ["person", "car"], "max_detections": 100})
        assert all(r.successful for r in restored)
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)


def test_compressed_input(ros_node, checkpoints, launch_process):
    from sensor_msgs.msg import CompressedImage

    from mtl_perception.ros.image_msg_builders import array_to_compressed_msg

    launch_process(node_command("multitask_node", f"checkpoint:={checkpoints['multitask']}", "device:=cpu",
                                "input_transport:=compressed", "reliability:=reliable")
                   + ["-r", "__ns:=/cmp", "-r", "image:=/cmp/camera"], name="compressed")
    ros_node.wait_for_subscriber("/cmp/camera/compressed", timeout=60)
    collectors = _collectors(ros_node, "/cmp", with_overlay=False)
    publisher = ros_node.node.create_publisher(CompressedImage, "/cmp/camera/compressed", reliable_qos(5))
    try:
        image = sample_image(90, 130, 7)
        msg = array_to_compressed_msg(image, fmt="png")
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 401, 123456, "cam"
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(msg), 401)
        assert (outputs["segmentation"].height, outputs["segmentation"].width) == (90, 130)
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)


def test_lifecycle_transitions_and_inactive_means_no_output(ros_node, checkpoints, launch_process):
    from lifecycle_msgs.msg import Transition

    target = "/lc/segmentation_node"
    launch_process(node_command("segmentation_node", f"checkpoint:={checkpoints['segmentation']}", "device:=cpu",
                                "managed:=true") + ["-r", "__ns:=/lc", "-r", "image:=/lc/camera"], name="lifecycle")
    assert get_state(ros_node.node, target) == "unconfigured"
    publisher = sensor_publisher(ros_node.node, "/lc/camera")
    collectors = {"segmentation": ros_node.collect("/lc/segmentation", __import__("sensor_msgs.msg", fromlist=["Image"]).Image, reliable_qos())}
    try:
        assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE)
        assert get_state(ros_node.node, target) == "inactive"
        for _ in range(5):  # inactive: subscribed to nothing, publishes nothing
            publisher.publish(image_msg(sample_image(40, 40), 500))
            time.sleep(0.2)
        assert not collectors["segmentation"].messages
        assert change_state(ros_node.node, target, Transition.TRANSITION_ACTIVATE)
        image = sample_image(40, 48, 9)
        wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 501)), 501)
        assert change_state(ros_node.node, target, Transition.TRANSITION_DEACTIVATE)
        time.sleep(0.5)
        count = len(collectors["segmentation"].messages)
        for _ in range(5):
            publisher.publish(image_msg(image, 502))
            time.sleep(0.2)
        assert len(collectors["segmentation"].messages) == count
        assert change_state(ros_node.node, target, Transition.TRANSITION_CLEANUP)
        assert get_state(ros_node.node, target) == "unconfigured"
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)


def test_lifecycle_configure_fails_on_a_bad_checkpoint(ros_node, tmp_path, launch_process):
    from lifecycle_msgs.msg import Transition

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    process = launch_process(node_command("detection_node", f"checkpoint:={bad}", "managed:=true") + ["-r", "__ns:=/lcbad"],
                             name="lifecycle_bad")
    assert get_state(ros_node.node, "/lcbad/detection_node") == "unconfigured"
    assert not change_state(ros_node.node, "/lcbad/detection_node", Transition.TRANSITION_CONFIGURE)
    assert get_state(ros_node.node, "/lcbad/detection_node") == "unconfigured"
    assert "cannot read checkpoint" in process.output()


@pytest.mark.parametrize("problem", ["missing", "corrupt", "wrong_task", "cuda_absent"])
def test_plain_node_exits_non_zero_on_a_bad_checkpoint_or_device(tmp_path, checkpoints, problem):
    if problem == "cuda_absent" and torch_cuda_available():
        pytest.skip("this machine has CUDA")
    path = {"missing": tmp_path / "nope.pt", "corrupt": tmp_path / "corrupt.pt", "wrong_task": checkpoints["segmentation"],
            "cuda_absent": checkpoints["detection"]}[problem]
    if problem == "corrupt":
        path.write_bytes(checkpoints["detection"].read_bytes()[:2000])
    device = "cuda" if problem == "cuda_absent" else "cpu"
    result = subprocess.run(node_command("detection_node", f"checkpoint:={path}", f"device:={device}") + ["-r", "__ns:=/bad"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    expected = {"missing": "not found", "corrupt": "cannot read checkpoint", "wrong_task": "without the detection branch",
                "cuda_absent": "CUDA is not available"}[problem]
    assert expected in result.stdout + result.stderr
    if problem != "cuda_absent":
        assert str(path) in result.stdout + result.stderr


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_cuda_out_of_memory_frame_is_dropped_and_the_next_one_served(checkpoints):
    """In-process node on real rclpy; the predictor raises CUDA OOM once, as a full GPU would."""
    import rclpy
    import torch
    from rclpy.parameter import Parameter

    from mtl_perception.ros.multitask_node import MultitaskNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = MultitaskNode(context=context, parameter_overrides=[Parameter("checkpoint", value=str(checkpoints["multitask"])),
                                                               Parameter("device", value="cpu")])
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        predictor = node.predictor
        real_predict = predictor.predict
        calls = []

        def out_of_memory_once(image):
            calls.append(image.shape)
            if len(calls) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_predict(image)

        predictor.predict = out_of_memory_once
        node.process_frame(image_msg(sample_image(40, 60), 1))
        assert (node.frames_processed, node.frames_dropped) == (0, 1)
        node.process_frame(image_msg(sample_image(40, 60), 2))
        assert (node.frames_processed, node.frames_dropped) == (1, 1)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_naive_graph_from_the_project_cli_honours_the_same_contract(ros_node, checkpoints, launch_process, tmp_path):
    from vision_msgs.msg import LabelInfo

    from mtl_perception.ros.graph import GRAPHS

    command = [sys.executable, "-m", "mtl_perception.ros.graph", "naive", "--namespace", "nv", "--camera-topic", "/nv/camera",
               "--segmentation-checkpoint", str(checkpoints["segmentation"]), "--detection-checkpoint",
               str(checkpoints["detection"]), "--device", "cpu", "--log-dir", str(tmp_path / "logs")]
    graph = launch_process(command, name="naive_graph")
    ros_node.wait_for_subscriber("/nv/camera", timeout=60)
    collectors = _collectors(ros_node, "/nv")
    publisher = sensor_publisher(ros_node.node, "/nv/camera")
    try:
        set_parameters(ros_node.node, "/nv/detection_node", {"score_threshold": 0.05})
        image = sample_image(120, 200, 11)
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 601)), 601, timeout=90)
        _check_contract(outputs, 120, 200, 601, "camera_optical")
        assert ros_node.node.count_publishers("/nv/label_info") == 1
        assert ros_node.node.count_publishers("/nv/overlay") == 1
        [info] = ros_node.wait_for_messages("/nv/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
        assert {c.class_name for c in info.class_map} == set(SEG_NAMES + DET_NAMES)
        assert graph.returncode is None
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    assert [s.executable for s in GRAPHS["naive"]] == ["segmentation_node", "detection_node", "overlay_node"]
    assert graph.stop() == 0


def test_graph_cli_exits_non_zero_when_a_node_fails(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mtl_perception.ros.graph", "multitask", "--checkpoint",
                             str(tmp_path / "missing.pt"), "--namespace", "fail"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert "multitask_node exited" in result.stderr and "not found" in result.stderr
