"""The inference nodes as users run them: real processes, real DDS on loopback."""

from __future__ import annotations

import contextlib
import re
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
        assert det.id == "", "no tracking: Detection2D.id stays empty"
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
        stages = stats.queue_ms + stats.preprocess_ms + stats.inference_ms + stats.postprocess_ms
        assert stats.total_ms == pytest.approx(stages, abs=3.0), "total_ms is the sum of the stages, waiting included"
        assert stats.gpu_memory_allocated_mb == 0.0
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    # A subscriber that joins late still gets each task's label_info (transient local), ids 0..N-1.
    [seg_info] = ros_node.wait_for_messages("/mt/segmentation/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
    [det_info] = ros_node.wait_for_messages("/mt/detections/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
    assert [(c.class_id, c.class_name) for c in seg_info.class_map] == [(0, "background"), (1, "road"), (2, "building")]
    assert [(c.class_id, c.class_name) for c in det_info.class_map] == [(0, "person"), (1, "car")]
    assert det_info.threshold == pytest.approx(0.05) and seg_info.threshold == 0.0


def _bad_images():
    from sensor_msgs.msg import Image

    good = image_msg(sample_image(40, 60), 0)
    cases = {}
    cases["unsupported encoding"] = Image(header=good.header, height=40, width=60, encoding="yuv422", step=120, data=bytes(4800))
    cases["step too small"] = Image(header=good.header, height=40, width=60, encoding="rgb8", step=100, data=bytes(4000))
    cases["truncated"] = Image(header=good.header, height=40, width=60, encoding="rgb8", step=180, data=bytes(good.data)[:5000])
    cases["zero size"] = Image(header=good.header, height=0, width=0, encoding="rgb8", step=0, data=b"")
    cases["enormous"] = Image(header=good.header, height=100000, width=100000, encoding="mono8", step=100000, data=bytes(16))
    # One pixel row more than 4K UHD: complete and well-formed, but above max_input_pixels' default.
    cases["above 4K"] = Image(header=good.header, height=2161, width=3840, encoding="mono8", step=3840, data=bytes(2161 * 3840))
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
        for fragment in ("yuv422", "step", "truncated", "dropped frame: bad input image", "above the limit of 8294400"):
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
        assert len(detections) == 2 and {d.results[0].hypothesis.class_id for d in detections} == {"car"}
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


@pytest.mark.parametrize("executable, parameter, value", [
    ("detection_node", "input_transport", "jpeg"), ("multitask_node", "reliability", "sometimes"),
    ("segmentation_node", "class_id_format", "uuid"), ("overlay_node", "input_transport", "theora"),
    ("overlay_node", "executor", "multi_threaded"), ("detection_node", "executor", "Events")])
def test_a_parameter_outside_its_choices_fails_configure_naming_it(tmp_path, checkpoints, executable, parameter, value):
    model = {"detection_node": "detection", "multitask_node": "multitask", "segmentation_node": "segmentation"}
    arguments = [f"{parameter}:={value}"] + ([f"checkpoint:={checkpoints[model[executable]]}", "device:=cpu"]
                                             if executable in model else [])
    result = subprocess.run(node_command(executable, *arguments) + ["-r", "__ns:=/choices"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert f"parameter '{parameter}' must be one of" in result.stdout + result.stderr
    assert f"got '{value}'" in result.stdout + result.stderr


def test_the_executor_parameter_picks_rclpys_executor_and_events_is_the_default(checkpoints):
    from mtl_perception.ros.managed_node import make_executor

    # rclpy.experimental.EventsExecutor is a factory; the executor it makes is a class of that name
    for overrides, expected in (({}, "EventsExecutor"), ({"executor": "events"}, "EventsExecutor"),
                                ({"executor": "single_threaded"}, "SingleThreadedExecutor")):
        with in_process_multitask_node(checkpoints["multitask"], configure=False, **overrides) as node:
            executor = make_executor(node)
            try:
                assert type(executor).__name__ == expected
            finally:
                executor.shutdown()


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def in_process_multitask_node(checkpoint, configure=True, **parameters):
    """A MultitaskNode on real rclpy in this process (own context), configured unless told not to;
    no executor spins it. ``parameters``: more parameter overrides."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from mtl_perception.ros.multitask_node import MultitaskNode

    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = {"checkpoint": str(checkpoint), "device": "cpu", **parameters}
    node = MultitaskNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    try:
        if configure:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        yield node
    finally:
        node.stop()
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_a_cuda_out_of_memory_frame_is_dropped_and_the_next_one_served(checkpoints):
    """In-process node on real rclpy; the predictor raises CUDA OOM once, as a full GPU would."""
    import torch

    with in_process_multitask_node(checkpoints["multitask"]) as node:
        predictor = node.predictor
        real_predict = predictor.predict
        calls = []

        def out_of_memory_once(image, **options):
            calls.append(image.shape)
            if len(calls) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_predict(image, **options)

        predictor.predict = out_of_memory_once
        node.process_frame(image_msg(sample_image(40, 60), 1))
        assert (node.frames_processed, node.frames_dropped) == (0, 1)
        node.process_frame(image_msg(sample_image(40, 60), 2))
        assert (node.frames_processed, node.frames_dropped) == (1, 1)


def test_naive_graph_from_the_project_cli_honours_the_same_contract(ros_node, checkpoints, launch_process, tmp_path):
    from vision_msgs.msg import LabelInfo

    from mtl_perception.graphs.graph import GRAPHS

    command = [sys.executable, "-m", "mtl_perception.graphs.graph", "naive", "--namespace", "nv", "--camera-topic", "/nv/camera",
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
        assert ros_node.node.count_publishers("/nv/segmentation/label_info") == 1
        assert ros_node.node.count_publishers("/nv/detections/label_info") == 1
        assert ros_node.node.count_publishers("/nv/overlay") == 1
        [seg_info] = ros_node.wait_for_messages("/nv/segmentation/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
        [det_info] = ros_node.wait_for_messages("/nv/detections/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
        assert [c.class_name for c in seg_info.class_map] == SEG_NAMES
        assert [c.class_name for c in det_info.class_map] == DET_NAMES
        assert graph.returncode is None
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    assert [s.executable for s in GRAPHS["naive"]] == ["segmentation_node", "detection_node", "overlay_node"]
    assert graph.stop() == 0


def test_graph_cli_exits_1_when_a_node_fails(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")  # a file, so the graph starts; the node then fails to load it
    result = subprocess.run([sys.executable, "-m", "mtl_perception.graphs.graph", "multitask", "--checkpoint",
                             str(corrupt), "--namespace", "fail"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert "multitask_node exited" in result.stderr and "cannot read checkpoint" in result.stderr


# -- the node's outputs are Predictor's -------------------------------------------------------------

EXACT_SIZE = (96, 128)  # input-size override (the checkpoint's is 64x80)
EXACT_PARAMS = ("device:=cpu", "backend:=torch", "cpu_threads:=1", "score_threshold:=0.05", "class_id_format:=index",
                f"input_height:={EXACT_SIZE[0]}", f"input_width:={EXACT_SIZE[1]}", "publish_overlay:=false",
                "reliability:=reliable", "diagnostics_slow_ms:=0.0")


@pytest.fixture(scope="module")
def exact_nodes(tmp_path_factory, checkpoints, ros_node):
    """Two multitask nodes with overrides: /ex (raw input) and /exc (compressed input)."""
    log_dir = tmp_path_factory.mktemp("exact")
    processes = {}
    for namespace, transport in (("ex", "raw"), ("exc", "compressed")):
        command = node_command("multitask_node", f"checkpoint:={checkpoints['multitask']}", *EXACT_PARAMS,
                               f"input_transport:={transport}") + ["-r", f"__ns:=/{namespace}", "-r", f"image:=/{namespace}/camera"]
        processes[namespace] = ros_harness.start_process(command, log_dir / f"{namespace}.log", cwd=log_dir)
    ros_node.wait_for_subscriber("/ex/camera", timeout=60)
    ros_node.wait_for_subscriber("/exc/camera/compressed", timeout=60)
    yield processes
    for namespace, process in processes.items():
        print(f"{namespace} exited {process.stop()}:\n{process.output()[-3000:]}")


@pytest.fixture
def single_threaded_torch():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the node (cpu_threads:=1): same kernels, same rounding
    yield
    torch.set_num_threads(threads)


def _predictor(checkpoint, input_size=EXACT_SIZE, **detection):
    from mtl_perception.postprocess import DetectionParams
    from mtl_perception.predictor import Predictor

    predictor = Predictor(checkpoint, device="cpu", input_size=input_size)
    params = {"score_threshold": 0.05, "nms_iou": 0.45, "max_detections": 100, **detection}
    params["pre_nms_top_k"] = max(DetectionParams.pre_nms_top_k, params["max_detections"])
    predictor.set_detection_params(DetectionParams(**params))
    return predictor


def _assert_outputs_equal_prediction(outputs: dict, prediction):
    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.vision_labels import detections_to_arrays

    np.testing.assert_array_equal(image_to_array(outputs["segmentation"]), prediction.mask)
    boxes, class_ids, scores = detections_to_arrays(outputs["detections"])
    assert class_ids == [str(int(label)) for label in prediction.labels]  # class_id_format: index
    np.testing.assert_allclose(boxes, prediction.boxes, atol=1e-4)
    np.testing.assert_allclose(scores, prediction.scores, atol=1e-6)


def _exact_collectors(ros_node, prefix):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    return {"segmentation": ros_node.collect(f"{prefix}/segmentation", Image, reliable_qos()),
            "detections": ros_node.collect(f"{prefix}/detections", Detection2DArray, reliable_qos())}


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_node_outputs_equal_predictor_on_raw_input(ros_node, exact_nodes, checkpoints, single_threaded_torch, encoding):
    image = sample_image(110, 170, seed=21)
    prediction = _predictor(checkpoints["multitask"]).predict(image)
    assert len(prediction.boxes) >= 2
    default_size = _predictor(checkpoints["multitask"], input_size=None).predict(image)
    assert not np.array_equal(default_size.mask, prediction.mask), "the input-size override must matter here"
    pixels = np.ascontiguousarray(image[:, :, ::-1]) if encoding == "bgr8" else image
    collectors = _exact_collectors(ros_node, "/ex")
    from sensor_msgs.msg import Image

    publisher = ros_node.node.create_publisher(Image, "/ex/camera", reliable_qos(5))
    try:
        stamp = 700 + (encoding == "bgr8")
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(pixels, stamp, encoding=encoding)), stamp)
        _assert_outputs_equal_prediction(outputs, prediction)
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    assert ros_node.node.count_publishers("/ex/segmentation") == 1
    assert ros_node.node.count_publishers("/ex/overlay") == 0, "publish_overlay: false"


def _png_bomb() -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("L", (8000, 8000)).save(buffer, format="PNG")  # ~60 KB declaring 64 MP
    return buffer.getvalue()


# 3840 x 2160 = 8294400, the default max_input_pixels
BOMB_REFUSAL = "8000x8000 has 64000000 pixels, above the limit of 8294400"


def test_node_outputs_equal_predictor_on_compressed_input_and_bombs_are_dropped(ros_node, exact_nodes, checkpoints,
                                                                               single_threaded_torch):
    import io

    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    from mtl_perception.ros.image_msg_builders import array_to_compressed_msg

    image = sample_image(90, 130, seed=7)
    predictor = _predictor(checkpoints["multitask"])
    jpeg = array_to_compressed_msg(image, fmt="jpeg", quality=85)
    decoded_jpeg = np.array(PILImage.open(io.BytesIO(bytes(jpeg.data))).convert("RGB"))
    cases = [(801, array_to_compressed_msg(image, fmt="png"), image),
             # the magic bytes decide: a JPEG labelled "png" (or unlabelled) is decoded as a JPEG
             (802, CompressedImage(format="png", data=bytes(jpeg.data)), decoded_jpeg),
             (803, CompressedImage(format="", data=bytes(jpeg.data)), decoded_jpeg)]
    collectors = _exact_collectors(ros_node, "/exc")
    publisher = ros_node.node.create_publisher(CompressedImage, "/exc/camera/compressed", reliable_qos(5))
    try:
        for stamp, msg, pixels in cases:
            msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp, 123456, "cam"
            outputs = wait_for_stamp(collectors, lambda: publisher.publish(msg), stamp)
            _assert_outputs_equal_prediction(outputs, predictor.predict(pixels))
        bomb = CompressedImage(format="png", data=_png_bomb())
        bomb.header.stamp.sec = 810
        publisher.publish(bomb)
        # Wait for the refusal before the next frame: the node's keep-last-1 reader would let a
        # frame sent right behind the bomb replace it unread.
        deadline = time.monotonic() + 30.0
        while BOMB_REFUSAL not in exact_nodes["exc"].output() and time.monotonic() < deadline:
            time.sleep(0.1)
        follow = array_to_compressed_msg(image, fmt="png")
        follow.header.stamp.sec = 811
        wait_for_stamp(collectors, lambda: publisher.publish(follow), 811)
        assert not [m for c in collectors.values() for m in c.messages if m.header.stamp.sec == 810]
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    assert BOMB_REFUSAL in exact_nodes["exc"].output()


def test_runtime_nms_score_and_max_detections_changes_show_in_the_outputs(ros_node, exact_nodes, checkpoints,
                                                                          single_threaded_torch):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    image = sample_image(120, 160, seed=33)
    changes = [({"score_threshold": 0.5, "nms_iou": 0.2}, 901), ({"max_detections": 5000, "score_threshold": 0.01, "nms_iou": 0.9}, 902)]
    collectors = _exact_collectors(ros_node, "/ex")
    publisher = ros_node.node.create_publisher(Image, "/ex/camera", reliable_qos(5))
    applied = {"score_threshold": 0.05, "nms_iou": 0.45, "max_detections": 100}
    try:
        counts = []
        for values, stamp in changes:
            results = set_parameters(ros_node.node, "/ex/multitask_node", values)
            assert all(r.successful for r in results), [r.reason for r in results]
            applied.update(values)
            outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, stamp)), stamp)
            prediction = _predictor(checkpoints["multitask"], **applied).predict(image)
            _assert_outputs_equal_prediction(outputs, prediction)
            counts.append(len(prediction.boxes))
            # label_info follows the runtime threshold (a late subscriber gets the current one)
            [info] = ros_node.wait_for_messages("/ex/detections/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
            assert info.threshold == pytest.approx(applied["score_threshold"])
        assert counts[1] > 100 > counts[0], counts  # max_detections 5000 lets more than the default 100 through
    finally:
        restored = set_parameters(ros_node.node, "/ex/multitask_node", {"score_threshold": 0.05, "nms_iou": 0.45,
                                                                        "max_detections": 100})
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    assert all(r.successful for r in restored)


def test_node_label_info_and_detections_round_trip_through_a_bag(ros_node, exact_nodes, checkpoints, tmp_path,
                                                                 single_threaded_torch):
    """What a node publishes, recorded as a bag's ground truth, reads back with the same classes and labels."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    from mtl_perception.bags import (GT_DETECTION_LABELS_TOPIC, GT_DETECTIONS_TOPIC, GT_SEGMENTATION_LABELS_TOPIC,
                                     GT_SEGMENTATION_TOPIC, BagWriter, open_bag)
    from mtl_perception.bags.typestore import DETECTION_2D_ARRAY, IMAGE, LABEL_INFO

    image = sample_image(100, 140, seed=5)
    collectors = _exact_collectors(ros_node, "/ex")
    publisher = ros_node.node.create_publisher(Image, "/ex/camera", reliable_qos(5))
    try:
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 1000)), 1000)
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    [seg_info] = ros_node.wait_for_messages("/ex/segmentation/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
    [det_info] = ros_node.wait_for_messages("/ex/detections/label_info", LabelInfo, 1, timeout=20, qos=latched_qos())
    stamp_ns = 1000 * 10**9 + 123456
    with BagWriter(tmp_path / "recorded", storage="mcap") as bag:  # what `ros2 bag record` stores: the CDR bytes
        bag.write("/camera/image_raw", IMAGE, stamp_ns, serialize_message(image_msg(image, 1000)))
        bag.write(GT_SEGMENTATION_LABELS_TOPIC, LABEL_INFO, stamp_ns, serialize_message(seg_info))
        bag.write(GT_DETECTION_LABELS_TOPIC, LABEL_INFO, stamp_ns, serialize_message(det_info))
        bag.write(GT_DETECTIONS_TOPIC, DETECTION_2D_ARRAY, stamp_ns, serialize_message(outputs["detections"]))
        bag.write(GT_SEGMENTATION_TOPIC, IMAGE, stamp_ns, serialize_message(outputs["segmentation"]))
    prediction = _predictor(checkpoints["multitask"]).predict(image)
    reader = open_bag(tmp_path / "recorded")
    assert reader.segmentation_classes == tuple(SEG_NAMES) and reader.detection_classes == tuple(DET_NAMES)
    [truth] = reader.ground_truth_detections().values()
    np.testing.assert_array_equal(truth.labels, prediction.labels)
    np.testing.assert_allclose(truth.boxes, prediction.boxes, atol=1e-4)
    [mask] = reader.ground_truth_masks().values()
    np.testing.assert_array_equal(mask, prediction.mask)


# -- backpressure ---------------------------------------------------------------------------------

class _Recorder:
    """Stands in for the stats publisher of an in-process node: keeps what it is given."""

    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


def test_burst_newest_frame_wins_drop_count_is_exact_and_waiting_is_not_queued(checkpoints):
    """In-process node on real rclpy; the network is held busy while a burst arrives."""
    import threading

    from rclpy.lifecycle import TransitionCallbackReturn

    with in_process_multitask_node(checkpoints["multitask"]) as node:
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        stats = node._outputs["stats"] = _Recorder()
        real_predict, busy, release, seen = node.predictor.predict, threading.Event(), threading.Event(), []

        def held_predict(image, **options):
            seen.append(image.shape[1])
            busy.set()
            release.wait(30)
            return real_predict(image, **options)

        node.predictor.predict = held_predict
        burst = [image_msg(sample_image(40, 50 + i), stamp_sec=i) for i in range(10)]
        node.image_callback(burst[0])
        assert busy.wait(30), "the worker took the first frame"
        for msg in burst[1:]:
            node.image_callback(msg)
            time.sleep(0.02)
        time.sleep(0.3)  # the newest frame waits in the slot while frame 0 is in the network
        release.set()
        deadline = time.monotonic() + 30
        while node.frames_processed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert seen == [50, 59], "frame 0, then only the newest of the burst"
        assert (node.frames_received, node.frames_processed, node.frames_dropped) == (10, 2, 8)
        first, newest = stats.messages
        assert [first.header.stamp.sec, newest.header.stamp.sec] == [0, 9]
        assert (newest.frames_received, newest.frames_processed, newest.frames_dropped) == (10, 2, 8)
        # frame 9 waited from its own arrival (~0.3 s), not since frame 1 arrived (~0.5 s): no queue
        assert 0.25e3 < newest.queue_ms < first.total_ms, (newest.queue_ms, first.total_ms)
        assert newest.total_ms == pytest.approx(newest.queue_ms + newest.preprocess_ms + newest.inference_ms
                                                + newest.postprocess_ms, abs=3.0)


class _OrderRecorder:
    """Stands in for one output publisher of an in-process node; notes the topic in a shared list."""

    def __init__(self, topic, order):
        self.topic, self.order = topic, order

    def publish(self, msg):
        self.order.append(self.topic)

    def get_subscription_count(self):
        return 1


class _Keeper(_OrderRecorder):
    """An output publisher that keeps its messages and has ``subscribers`` subscribers."""

    def __init__(self, topic, order, subscribers):
        super().__init__(topic, order)
        self.subscribers, self.messages = subscribers, []

    def publish(self, msg):
        super().publish(msg)
        self.messages.append(msg)

    def get_subscription_count(self):
        return self.subscribers


def test_the_colour_image_is_made_only_while_subscribed_and_is_the_mask_in_the_palette(checkpoints):
    from mtl_perception.visualization import colorize_mask

    with in_process_multitask_node(checkpoints["multitask"]) as node:
        for subscribers in (0, 1):
            order = []
            for topic in ("detections", "segmentation", "stats"):
                node._outputs[topic] = _Keeper(topic, order, 1)
            node._outputs["segmentation/color"] = color = _Keeper("segmentation/color", order, subscribers)
            node._outputs["overlay"] = _Keeper("overlay", order, 0)
            node.process_frame(image_msg(sample_image(90, 160), 1))
            if not subscribers:
                assert order == ["detections", "segmentation", "stats"]
                continue
            assert order == ["detections", "segmentation", "segmentation/color", "stats"]
            seg, [rgb] = node._outputs["segmentation"].messages[0], color.messages
            mask = np.frombuffer(bytes(seg.data), np.uint8).reshape(seg.height, seg.step)[:, :seg.width]
            pixels = np.frombuffer(bytes(rgb.data), np.uint8).reshape(rgb.height, rgb.step)[:, :rgb.width * 3]
            np.testing.assert_array_equal(pixels.reshape(rgb.height, rgb.width, 3), colorize_mask(mask))


def test_detections_are_published_before_the_full_resolution_images(checkpoints):
    with in_process_multitask_node(checkpoints["multitask"]) as node:
        order = []
        for topic in ("detections", "segmentation", "segmentation/color", "overlay", "stats"):
            node._outputs[topic] = _OrderRecorder(topic, order)
        node.process_frame(image_msg(sample_image(720 // 4, 1280 // 4), 1))
        assert order == ["detections", "segmentation", "segmentation/color", "overlay", "stats"]


def test_a_burst_over_dds_serves_the_last_frame_and_accounts_for_every_frame(ros_node, multitask):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    collectors = _collectors(ros_node, "/mt", with_overlay=False)
    diagnostics = ros_node.collect("/diagnostics", DiagnosticArray, reliable_qos())
    publisher = sensor_publisher(ros_node.node, "/mt/camera")
    try:
        frames = [image_msg(sample_image(200, 260, seed=i), 1100 + i) for i in range(20)]
        for msg in frames:
            publisher.publish(msg)
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(frames[-1]), 1119)
        time.sleep(0.5)
        stats = outputs["stats"]
        assert stats.frames_received == stats.frames_processed + stats.frames_dropped
        served = {m.header.stamp.sec for m in collectors["stats"].messages if 1100 <= m.header.stamp.sec < 1120}
        assert 1119 in served
        dropped = stats.frames_dropped - min(m.frames_dropped for m in collectors["stats"].messages)
        if dropped:  # the node could not keep up with the burst: /diagnostics says so
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                mine = [s for a in diagnostics.messages for s in a.status if s.name == "/mt/multitask_node: inference"]
                if any(s.level == DiagnosticStatus.WARN and "dropping" in s.message for s in mine):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"no WARN on /diagnostics after {dropped} dropped frames")
    finally:
        _close(collectors)
        diagnostics.close()
        ros_node.node.destroy_publisher(publisher)


# -- lifecycle, diagnostics and configuration errors ----------------------------------------------

def test_lifecycle_configure_again_after_cleanup_then_shutdown_while_active(ros_node, checkpoints, launch_process):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    target = "/lc2/detection_node"
    process = launch_process(node_command("detection_node", f"checkpoint:={checkpoints['detection']}", "device:=cpu",
                                          "managed:=true", "score_threshold:=0.05")
                             + ["-r", "__ns:=/lc2", "-r", "image:=/lc2/camera"], name="lifecycle2")
    diagnostics = ros_node.collect("/diagnostics", DiagnosticArray, reliable_qos())
    collectors = {"detections": ros_node.collect("/lc2/detections", Detection2DArray, reliable_qos())}
    publisher = ros_node.node.create_publisher(Image, "/lc2/camera", reliable_qos(5))
    image = sample_image(40, 48, 9)

    def node_status(predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for array in list(diagnostics.messages):
                for status in array.status:
                    if status.name == f"{target}: inference" and predicate(status):
                        return status
            time.sleep(0.1)
        raise TimeoutError(f"no matching /diagnostics status of {target}")

    try:
        assert get_state(ros_node.node, target) == "unconfigured"
        unconfigured = node_status(lambda s: True)
        assert (unconfigured.level, unconfigured.message) == (DiagnosticStatus.ERROR, "unconfigured")
        for round_stamp in (1201, 1202):
            assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE)
            assert change_state(ros_node.node, target, Transition.TRANSITION_ACTIVATE)
            wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, round_stamp)), round_stamp)
            if round_stamp == 1201:
                assert change_state(ros_node.node, target, Transition.TRANSITION_DEACTIVATE)
                assert change_state(ros_node.node, target, Transition.TRANSITION_CLEANUP)
                assert get_state(ros_node.node, target) == "unconfigured"
        served = node_status(lambda s: s.level == DiagnosticStatus.OK)
        values = {kv.key: kv.value for kv in served.values}
        assert (values["device"], values["model"], values["state"]) == ("cpu", "tiny-detection", "active")
        assert served.hardware_id == "cpu"
        assert change_state(ros_node.node, target, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert process.wait(30) == 0, "a finalized node ends its process"
    finally:
        _close(collectors)
        diagnostics.close()
        ros_node.node.destroy_publisher(publisher)


@pytest.mark.parametrize("size", [{"input_height": 96}, {"input_width": 128}, {"input_height": -2, "input_width": 8}])
def test_a_lone_or_negative_input_height_or_width_fails_configure(checkpoints, size, capfd):
    """In-process node; a plain start turns the failed configure into exit code 1 (see the bad-checkpoint test)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    with in_process_multitask_node(checkpoints["multitask"], configure=False, **size) as node:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.predictor is None
        assert "set both to positive sizes, or both to 0 for the checkpoint's input size" in capfd.readouterr().err


# -- overlay_node ----------------------------------------------------------------------------------

@pytest.mark.parametrize("executor", ["events", "single_threaded"])
def test_overlay_node_is_a_lifecycle_node_and_pairs_by_stamp_when_frames_are_dropped_or_reordered(
        ros_node, launch_process, executor):
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray, LabelInfo, VisionClass

    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.ros.messages import detections_msg

    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    target = "/ov/overlay_node"
    diagnostics = ros_node.collect("/diagnostics", DiagnosticArray, reliable_qos())
    launch_process(node_command("overlay_node", "managed:=true", "reliability:=reliable", f"executor:={executor}")
                   + ["-r", "__ns:=/ov"], name="overlay")
    assert get_state(ros_node.node, target) == "unconfigured"

    def overlay_statuses():
        return [s for a in list(diagnostics.messages) for s in a.status if s.name == f"{target}: overlay"]
    publishers = {"image": ros_node.node.create_publisher(Image, "/ov/image", reliable_qos()),
                  "segmentation": ros_node.node.create_publisher(Image, "/ov/segmentation", reliable_qos()),
                  "detections": ros_node.node.create_publisher(Detection2DArray, "/ov/detections", reliable_qos())}
    label_info = ros_node.node.create_publisher(LabelInfo, "/ov/detections/label_info", latched_qos())
    label_info.publish(LabelInfo(class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(DET_NAMES)]))
    overlays = ros_node.collect("/ov/overlay", Image, reliable_qos())
    images = {stamp: np.full((30, 40, 3), 10 * stamp, np.uint8) for stamp in range(1, 9)}

    def parts(stamp):
        image = image_msg(images[stamp], stamp)
        mask = image_msg(np.zeros((30, 40), np.uint8), stamp, encoding="mono8")
        return {"image": image, "segmentation": mask,
                "detections": detections_msg(image.header, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), DET_NAMES)}

    try:
        for kind, msg in parts(1).items():  # unconfigured: nothing comes out
            publishers[kind].publish(msg)
        time.sleep(1.5)
        assert not overlays.messages
        assert [(s.level, s.message) for s in overlay_statuses()][:1] == [(DiagnosticStatus.ERROR, "unconfigured")]
        assert change_state(ros_node.node, target, Transition.TRANSITION_CONFIGURE)
        assert change_state(ros_node.node, target, Transition.TRANSITION_ACTIVATE)
        ros_node.wait_for_subscriber("/ov/image", timeout=20)
        deadline = time.monotonic() + 20
        while ros_node.node.count_subscribers("/ov/segmentation") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the overlay publisher sees our subscription
        # stamps 2..8 arrive interleaved and out of order; 4 never gets its mask, 6 never its boxes
        order = [("detections", 3), ("image", 5), ("segmentation", 3), ("image", 2), ("segmentation", 5),
                 ("image", 4), ("detections", 2), ("image", 3), ("segmentation", 2), ("detections", 4),
                 ("image", 6), ("segmentation", 6), ("segmentation", 8), ("image", 8), ("detections", 8),
                 ("image", 7), ("detections", 7), ("detections", 5), ("segmentation", 7)]
        messages = {stamp: parts(stamp) for stamp in range(2, 9)}
        for kind, stamp in order:
            publishers[kind].publish(messages[stamp][kind])
            time.sleep(0.02)
        overlays.wait_for(5, timeout=20)
        time.sleep(1.0)
        got = {m.header.stamp.sec: m for m in overlays.messages}
        assert sorted(got) == [2, 3, 5, 7, 8] and len(overlays.messages) == 5
        for stamp, msg in got.items():  # each overlay is drawn on its own frame (background mask: image unchanged)
            np.testing.assert_array_equal(image_to_array(msg), images[stamp])
        time.sleep(1.5)
        values = {kv.key: kv.value for kv in overlay_statuses()[-1].values}
        assert (values["state"], values["overlays_published"], values["detection_classes"]) == ("active", "5", "2")
    finally:
        diagnostics.close()
        overlays.close()
        for publisher in [*publishers.values(), label_info]:
            ros_node.node.destroy_publisher(publisher)


def test_overlay_node_draws_on_compressed_camera_frames(ros_node, launch_process):
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.image_msg_codec import image_to_array
    from mtl_perception.ros.image_msg_builders import array_to_compressed_msg
    from mtl_perception.ros.messages import detections_msg

    launch_process(node_command("overlay_node", "input_transport:=compressed", "reliability:=reliable")
                   + ["-r", "__ns:=/ovc"], name="overlay_compressed")
    ros_node.wait_for_subscriber("/ovc/image/compressed", timeout=30)
    publishers = {"image": ros_node.node.create_publisher(CompressedImage, "/ovc/image/compressed", reliable_qos()),
                  "segmentation": ros_node.node.create_publisher(Image, "/ovc/segmentation", reliable_qos()),
                  "detections": ros_node.node.create_publisher(Detection2DArray, "/ovc/detections", reliable_qos())}
    overlays = ros_node.collect("/ovc/overlay", Image, reliable_qos())
    frame = sample_image(30, 40, seed=5)
    try:
        deadline = time.monotonic() + 20
        while ros_node.node.count_subscribers("/ovc/detections") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the overlay publisher sees our subscription
        for stamp in (1, 2):  # stamp 2 in case the first went out before every match
            mask = image_msg(np.zeros((30, 40), np.uint8), stamp, encoding="mono8")
            image = array_to_compressed_msg(frame, fmt="png")  # lossless: the overlay can be compared exactly
            image.header = mask.header
            publishers["image"].publish(image)
            publishers["segmentation"].publish(mask)
            publishers["detections"].publish(detections_msg(mask.header, np.zeros((0, 4)), np.zeros(0),
                                                            np.zeros(0, int), DET_NAMES))
            time.sleep(0.5)
        [first, *_] = overlays.wait_for(1, timeout=20)
        # a background mask and no boxes leave the camera frame as it was
        np.testing.assert_array_equal(image_to_array(first), frame)
    finally:
        overlays.close()
        for publisher in publishers.values():
            ros_node.node.destroy_publisher(publisher)


def test_a_flood_of_bad_frames_that_differ_in_byte_counts_logs_one_line(ros_node, exact_nodes):
    from sensor_msgs.msg import Image

    publisher = ros_node.node.create_publisher(Image, "/ex/camera", reliable_qos(50))
    collectors = _exact_collectors(ros_node, "/ex")
    try:
        good = image_msg(sample_image(40, 60), 1300)
        for size in range(40):  # 40 truncated frames, each a different number of bytes short
            publisher.publish(Image(header=good.header, height=40, width=60, encoding="rgb8", step=180,
                                    data=bytes(good.data)[:1000 + 17 * size]))
            time.sleep(0.02)
        follow = sample_image(40, 60, seed=3)
        wait_for_stamp(collectors, lambda: publisher.publish(image_msg(follow, 1301)), 1301)
    finally:
        _close(collectors)
        ros_node.node.destroy_publisher(publisher)
    lines = [line for line in exact_nodes["ex"].output().splitlines() if "expected step * height" in line]
    assert len(lines) == 1, lines
    assert re.search(r"dropped frame: bad input image: image data has \d+ bytes, expected step \* height = 180 \* 40 = 7200",
                     lines[0]), lines[0]  # the detail stays in the line
