"""multicam_node as users run it: one process serving three cameras over real DDS on loopback."""

from __future__ import annotations

import collections
import math
import re
import sys
import time

import numpy as np
import pytest

import ros_harness
from node_fixtures import (DET_NAMES, SEG_NAMES, image_msg, latched_qos, make_tiny_checkpoints, node_command,
                           reliable_qos, sample_image, sensor_publisher, wait_for_stamp)

pytestmark = pytest.mark.usefixtures("ros_node")

SCORE_THRESHOLD = 0.05
# camera -> (height, width, frame_id): three sizes, both orientations, none the network's 64x80.
CAMERAS = {"front": (120, 200, "front_optical"), "down": (96, 96, "down_optical"), "left": (150, 90, "left_optical")}
OUTPUTS = ("segmentation", "segmentation/color", "detections", "stats")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def multicam(tmp_path_factory, checkpoints, ros_node):
    """One multicam_node in namespace /mc serving front, down and left in passes of up to 3 frames;
    ``sent`` counts frames per camera."""
    log_dir = tmp_path_factory.mktemp("multicam")
    command = node_command("multicam_node", f"checkpoint:={checkpoints['multitask']}", "device:=cpu", "cpu_threads:=1",
                           f"score_threshold:={SCORE_THRESHOLD}", f"cameras:=[{','.join(CAMERAS)}]",
                           "max_batch:=3", "backend:=onnxruntime") + ["-r", "__ns:=/mc"]  # max_batch: not left to the timing
    process = ros_harness.start_process(command, log_dir / "multicam_node.log", cwd=log_dir)
    try:
        for camera in CAMERAS:
            ros_node.wait_for_subscriber(f"/mc/{camera}/image", timeout=60)
    except TimeoutError:
        process.stop()
        raise AssertionError(f"multicam_node did not subscribe:\n{process.output()[-3000:]}")
    publishers = {camera: sensor_publisher(ros_node.node, f"/mc/{camera}/image") for camera in CAMERAS}
    yield {"process": process, "publishers": publishers, "sent": collections.Counter()}
    for publisher in publishers.values():
        ros_node.node.destroy_publisher(publisher)
    code = process.stop()
    print(f"multicam_node exited {code}:\n{process.output()[-3000:]}")


def _collect(ros_node, camera: str) -> dict:
    from mtl_perception.msg import InferenceStats
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    types = {"segmentation": Image, "segmentation/color": Image, "detections": Detection2DArray, "stats": InferenceStats}
    return {name: ros_node.collect(f"/mc/{camera}/{name}", types[name], reliable_qos()) for name in OUTPUTS}


def _serve(multicam, collectors: dict, frames: dict, timeout: float = 60.0, resend: bool = True) -> dict:
    """Publish every camera's frame (again each second while unanswered, if ``resend``) until
    each camera's collectors hold its stamp; returns camera -> output -> message."""
    deadline = time.monotonic() + timeout
    found: dict = {camera: {} for camera in frames}
    next_publish = 0.0
    while time.monotonic() < deadline:
        waiting = [camera for camera in frames if len(found[camera]) < len(OUTPUTS)]
        if not waiting:
            return found
        if time.monotonic() >= next_publish:
            for camera in waiting:
                image, stamp = frames[camera]
                multicam["publishers"][camera].publish(image_msg(image, stamp, CAMERAS[camera][2]))
                multicam["sent"][camera] += 1
            next_publish = time.monotonic() + 1.0 if resend else math.inf
        for camera in waiting:
            for name, collector in collectors[camera].items():
                match = [m for m in list(collector.messages) if m.header.stamp.sec == frames[camera][1]]
                if match:
                    found[camera][name] = match[0]
        time.sleep(0.05)
    raise TimeoutError(f"not every output arrived within {timeout} s: { {c: sorted(f) for c, f in found.items()} }")


def _close(collectors: dict) -> None:
    for per_camera in collectors.values():
        for collector in per_camera.values():
            collector.close()


def _boxes(detections) -> tuple[np.ndarray, np.ndarray, list[str]]:
    boxes = [(d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y - d.bbox.size_y / 2,
              d.bbox.center.position.x + d.bbox.size_x / 2, d.bbox.center.position.y + d.bbox.size_y / 2)
             for d in detections.detections]
    scores = [d.results[0].hypothesis.score for d in detections.detections]
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores), [d.results[0].hypothesis.class_id for d in detections.detections]


def test_three_cameras_get_their_own_outputs_equal_to_single_image_predictions(ros_node, multicam, checkpoints):
    from mtl_perception.postprocess import DetectionParams
    from mtl_perception.predictor import Predictor

    collectors = {camera: _collect(ros_node, camera) for camera in CAMERAS}
    frames = {camera: (sample_image(h, w, seed=index), 10 + index) for index, (camera, (h, w, _)) in enumerate(CAMERAS.items())}
    try:
        outputs = _serve(multicam, collectors, frames)
        time.sleep(0.5)  # anything misrouted would have arrived by now
        for camera, per_output in collectors.items():
            for name, collector in per_output.items():
                frame_ids = {m.header.frame_id for m in collector.messages}
                assert frame_ids == {CAMERAS[camera][2]}, f"/mc/{camera}/{name} got frames of {frame_ids}"
    finally:
        _close(collectors)
    predictor = Predictor(checkpoints["multitask"], device="cpu", warmup=0, backend="onnxruntime", threads=1,
                          detection=DetectionParams(score_threshold=SCORE_THRESHOLD))
    for camera, (height, width, frame_id) in CAMERAS.items():
        image, stamp = frames[camera]
        got = outputs[camera]
        for name, msg in got.items():
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (stamp, 123456, frame_id), name
        seg = got["segmentation"]
        assert (seg.height, seg.width, seg.encoding) == (height, width, "mono8")
        assert (got["segmentation/color"].height, got["segmentation/color"].width) == (height, width)
        mask = np.frombuffer(bytes(seg.data), np.uint8).reshape(height, seg.step)[:, :width]
        alone = predictor.predict(image)
        assert (mask == alone.mask).mean() > 0.999, camera
        boxes, scores, class_ids = _boxes(got["detections"])
        assert len(boxes) == len(alone.boxes) > 0, camera
        order, expected_order = np.lexsort(boxes.T[::-1]), np.lexsort(alone.boxes.T[::-1])
        np.testing.assert_allclose(boxes[order], alone.boxes[expected_order], atol=1e-2)
        np.testing.assert_allclose(scores[order], alone.scores[expected_order], atol=1e-4)
        assert [class_ids[i] for i in order] == [DET_NAMES[i] for i in alone.labels[expected_order]]
        assert got["stats"].node_name == "/mc/multicam_node"


class _TimedPredictor:
    """Stands in for a Predictor whose batched pass and single passes take known times."""

    input_size = (32, 32)

    def __init__(self, batch_s: float, frame_s: float):
        from mtl_perception.engines.onnx_session import EngineInfo

        self.batch_s, self.frame_s, self.engine = batch_s, frame_s, EngineInfo("onnxruntime", "CPUExecutionProvider", "fp32")

    def predict_batch(self, frames):
        time.sleep(self.batch_s)

    def predict(self, frame):
        time.sleep(self.frame_s)


@pytest.mark.parametrize("batch_s, frame_s, expected", [(0.02, 0.03, 4), (0.2, 0.01, 1)])
def test_auto_max_batch_takes_the_way_measured_faster_in_the_engine(batch_s, frame_s, expected):
    from mtl_perception.ros.multicam_node import measure_batching

    # 4 cameras: batched 20 ms against 4 x 30 ms one by one; then 200 ms against 4 x 10 ms.
    chosen = measure_batching(_TimedPredictor(batch_s, frame_s), 4)
    assert chosen["max_batch"] == expected
    assert chosen["batched_ms"] == pytest.approx(batch_s * 1e3, rel=0.5)
    assert chosen["one_by_one_ms"] == pytest.approx(4 * frame_s * 1e3, rel=0.5)
    assert "onnxruntime CPUExecutionProvider fp32" in chosen["chosen_by"]
    assert measure_batching(_TimedPredictor(batch_s, frame_s), 1)["max_batch"] == 1


def test_a_silent_camera_does_not_stall_the_others_and_counters_are_per_camera(ros_node, multicam):
    down_before = _camera_statuses(ros_node)["down"][1]["frames_received"]
    collectors = {camera: _collect(ros_node, camera) for camera in CAMERAS}
    served = {"front": [], "left": []}
    try:
        for round_index in range(4):  # "down" sends nothing
            frames = {camera: (sample_image(60 + 10 * round_index, 80, seed=round_index), 100 + 10 * round_index + i)
                      for i, camera in enumerate(served)}
            # Round 0 resends until answered, so the node has matched the new subscriptions;
            # then each frame is sent once (a resend under load would be a frame the node
            # never got while the first copy was still in the network).
            outputs = _serve(multicam, {c: collectors[c] for c in served}, frames, timeout=60.0,
                             resend=round_index == 0)
            for camera in served:
                served[camera].append(outputs[camera]["stats"])
        assert not any(collector.messages for collector in collectors["down"].values()), "down sent nothing"
    finally:
        _close(collectors)
    for camera, stats in served.items():
        first, last = stats[0], stats[-1]
        # After round 0 each frame was sent once, after the previous one was answered, so none
        # replaced another: each was received and served, and nothing more was dropped.
        assert (last.frames_received, last.frames_processed, last.frames_dropped) == (
            first.frames_received + 3, first.frames_processed + 3, first.frames_dropped), camera
        assert last.header.frame_id == CAMERAS[camera][2]
    assert multicam["sent"]["down"] < multicam["sent"]["front"], "down's frames were counted apart"
    statuses = _camera_statuses(ros_node)
    assert sorted(statuses) == sorted(CAMERAS)
    for camera, (message, values) in statuses.items():
        if camera in served:
            last = served[camera][-1]
            assert values["frames_received"] == str(last.frames_received), camera
            assert values["frames_dropped"] == str(last.frames_dropped), camera
        else:  # the silent camera's count stood still while the others were served
            assert values["frames_received"] == down_before, camera
    assert statuses["down"][0] == "ok, no images in the last window"
    assert multicam["process"].returncode is None


def _camera_statuses(ros_node, timeout: float = 20.0) -> dict[str, tuple[str, dict]]:
    """camera -> (message, values) of the node's next /diagnostics array (one status per camera)."""
    from diagnostic_msgs.msg import DiagnosticArray

    collector = ros_node.collect("/diagnostics", DiagnosticArray)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for array in list(collector.messages):
                found = {s.name.rsplit(": ", 1)[-1].removesuffix(" inference"):
                         (s.message, {kv.key: kv.value for kv in s.values})
                         for s in array.status if s.name.startswith("/mc/multicam_node: ")}
                if found:
                    return found
            time.sleep(0.1)
    finally:
        collector.close()
    raise AssertionError("no /diagnostics from /mc/multicam_node")


def test_invalid_camera_lists_fail_configure_with_a_clear_error(checkpoints, launch_process):
    process = launch_process(node_command("multicam_node", f"checkpoint:={checkpoints['multitask']}", "device:=cpu",
                                          "cameras:=[front,front]"), name="repeated")
    assert process.wait(60) == 1
    assert "cameras ['front'] are listed more than once" in process.output()


def test_multicam_graph_arguments_override_the_yaml_cameras():
    from mtl_perception.graphs.graph import node_overrides, node_parameters

    overrides = node_overrides("multitask_multicam", {"cameras": "front, down,stereo/left", "checkpoint": "/x/mt.pt"})
    assert overrides == {"multicam_node": {"checkpoint": "/x/mt.pt", "cameras": ["front", "down", "stereo/left"]}}
    from_yaml = node_parameters("multitask_multicam", ros_harness.REPO_ROOT / "config" / "mtl_perception.yaml")
    assert from_yaml["multicam_node"]["cameras"] == ["front", "down"]
    assert from_yaml["multicam_node"]["checkpoint"] == "checkpoints/demo_multitask.pt"


def test_multicam_graph_from_the_project_cli_serves_the_cameras_it_is_given(ros_node, checkpoints, launch_process, tmp_path):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    command = [sys.executable, "-m", "mtl_perception.graphs.graph", "multitask_multicam", "--namespace", "gm",
               "--cameras", "port,starboard", "--checkpoint", str(checkpoints["multitask"]), "--device", "cpu",
               "--log-dir", str(tmp_path / "logs")]
    graph = launch_process(command, name="multicam_graph")
    for camera in ("port", "starboard"):
        ros_node.wait_for_subscriber(f"/gm/{camera}/image", timeout=60)
        [seg_info] = ros_node.wait_for_messages(f"/gm/{camera}/segmentation/label_info", LabelInfo, 1, timeout=20,
                                                qos=latched_qos())
        assert [c.class_name for c in seg_info.class_map] == SEG_NAMES
    assert ros_node.node.count_subscribers("/gm/front/image") == 0, "the YAML's cameras were replaced"
    collector = ros_node.collect("/gm/starboard/segmentation", Image, reliable_qos())
    publisher = sensor_publisher(ros_node.node, "/gm/starboard/image")
    try:
        image = sample_image(70, 110, 3)
        publish = lambda: publisher.publish(image_msg(image, 700, "starboard_optical"))  # noqa: E731
        mask = wait_for_stamp({"segmentation": collector}, publish, 700)["segmentation"]
        assert (mask.height, mask.width, mask.header.frame_id) == (70, 110, "starboard_optical")
        assert graph.returncode is None
    finally:
        collector.close()
        ros_node.node.destroy_publisher(publisher)
    assert graph.stop() == 0
    # The YAML's max_batch 0: the node timed both ways in the engine it runs (auto: onnxruntime on the CPU).
    log = (tmp_path / "logs" / "multicam_node.log").read_text()
    assert re.search(r"at most [12] frame\(s\) per network pass \(auto: 2 frames batched [0-9.]+ ms vs one by one "
                     r"[0-9.]+ ms in onnxruntime CPUExecutionProvider fp32, median of 3\)", log), log[-2000:]



def test_bench_frames_come_from_each_camera_topic_or_one_shared_bag(tmp_path):
    from mtl_perception.bags.frames_to_bag import write_bag
    from mtl_perception.bags.multicam_bag import merge_camera_bags
    from mtl_perception.bags.sources import SourceFrame
    from mtl_perception.replay.multicam_bench import load_frames

    def frames(values, size):
        return [SourceFrame(np.full((*size, 3), v, np.uint8), str(v)) for v in values]

    write_bag(frames([1, 2, 3], (8, 10)), tmp_path / "a", rate=10.0)
    write_bag(frames([7, 8], (6, 4)), tmp_path / "b", rate=10.0)
    merge_camera_bags({"/front/image": tmp_path / "a", "/down/image": tmp_path / "b"}, tmp_path / "rig")
    first_pixels = lambda cameras: {c: [m.data[0] for m in ms] for c, ms in cameras.items()}  # noqa: E731
    assert first_pixels(load_frames(tmp_path / "rig", 2)) == {"cam0": [1, 2, 3], "cam1": [7, 8]}
    assert first_pixels(load_frames(tmp_path / "a", 4)) == {"cam0": [1, 2, 3], "cam1": [2, 3, 1], "cam2": [3, 1, 2],
                                                            "cam3": [1, 2, 3]}
    with pytest.raises(ValueError, match="2 camera topics"):
        load_frames(tmp_path / "rig", 3)


def test_bench_report_names_the_engine_the_nodes_run(tmp_path):
    from mtl_perception.replay.multicam_bench import engine_line

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    backend: auto\n    precision: fp32\n"
                      "/**/multitask_node:\n  ros__parameters:\n    checkpoint: x.pt\n")
    assert engine_line(str(params), {"device": "cpu"}) == "onnxruntime CPUExecutionProvider fp32"  # auto on the CPU
    assert engine_line(str(params), {"device": "cpu", "backend": "torch"}) == "torch cpu fp32"
    assert engine_line(str(params), {"device": "cpu", "precision": "int8"}) == "onnxruntime CPUExecutionProvider int8"
    with pytest.raises(ValueError, match="'int8'.*'torch'"):
        engine_line(str(params), {"device": "cpu", "backend": "torch", "precision": "int8"})
