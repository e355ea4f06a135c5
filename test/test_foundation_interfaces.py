"""Interfaces: the vision_msgs twin matches upstream 4.x, and InferenceStats
crosses a real DDS link between two processes intact."""

import json
import sys
from pathlib import Path

import pytest
import ros_harness

REPO_ROOT = ros_harness.REPO_ROOT

# RIHS01 hashes of upstream vision_msgs 4.1.1 (computed from its .msg files).
UPSTREAM_VISION_MSGS_HASHES = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose":
        "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
}

# Field layout of vision_msgs 4.x, as rclpy reports it.
UPSTREAM_VISION_MSGS_FIELDS = {
    "Detection2DArray": {"header": "std_msgs/Header",
                         "detections": "sequence<vision_msgs/Detection2D>"},
    "Detection2D": {"header": "std_msgs/Header",
                    "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                    "bbox": "vision_msgs/BoundingBox2D", "id": "string"},
    "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis",
                                 "pose": "geometry_msgs/PoseWithCovariance"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "Point2D": {"x": "double", "y": "double"},
    "LabelInfo": {"header": "std_msgs/Header", "class_map": "sequence<vision_msgs/VisionClass>",
                  "threshold": "float"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
}

def generated_hash(package, type_name):
    """RIHS01 hash from the type description rosidl generated into the install."""
    path = (ros_harness.install_prefix(package) / "share" / package / "msg"
            / f"{type_name}.json")
    if not path.exists():
        pytest.fail(f"{path} is missing: run 'make build'")
    hashes = json.loads(path.read_text())["type_hashes"]
    return {entry["type_name"]: entry["hash_string"] for entry in hashes}[
        f"{package}/msg/{type_name}"]


@pytest.mark.smoke
@pytest.mark.parametrize("type_name", sorted(UPSTREAM_VISION_MSGS_HASHES))
def test_twin_type_hashes_match_upstream(type_name):
    assert generated_hash("vision_msgs", type_name) == UPSTREAM_VISION_MSGS_HASHES[type_name]


def test_twin_msg_files_hash_like_upstream_in_rosbags():
    """What ROS-free bag code registers from the .msg texts is wire-identical too."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for msg_file in sorted((REPO_ROOT / "vision_msgs_twin" / "msg").glob("*.msg")):
        types.update(get_types_from_msg(msg_file.read_text(), f"vision_msgs/msg/{msg_file.stem}"))
    types.update(get_types_from_msg((REPO_ROOT / "msg" / "InferenceStats.msg").read_text(),
                                    "mtl_perception/msg/InferenceStats"))
    store.register(types)
    assert {name: store.hash_rihs01(f"vision_msgs/msg/{name}")
            for name in UPSTREAM_VISION_MSGS_HASHES} == UPSTREAM_VISION_MSGS_HASHES
    assert store.hash_rihs01("mtl_perception/msg/InferenceStats") == \
        generated_hash("mtl_perception", "InferenceStats")


def test_twin_field_layout_matches_4x():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    import vision_msgs.msg

    layouts = {name: getattr(vision_msgs.msg, name).get_fields_and_field_types()
               for name in UPSTREAM_VISION_MSGS_FIELDS}
    assert layouts == UPSTREAM_VISION_MSGS_FIELDS
    assert Path(vision_msgs.msg.__file__).is_relative_to(ros_harness.WORKSPACE_INSTALL)


STATS_FIELDS = {
    "header": {"stamp": {"sec": 1700000000, "nanosec": 123456789}, "frame_id": "camera_optical"},
    "node_name": "/drone1/multitask_node",
    "model_name": "multitask_resnet50",
    "device": "cuda:0",
    "precision": "fp16",
    "queue_ms": 0.5,
    "preprocess_ms": 1.25,
    "inference_ms": 12.5,
    "postprocess_ms": 2.75,
    "total_ms": 16.5,
    "frames_received": 2**40 + 7,
    "frames_processed": 2**40,
    "frames_dropped": 7,
    "gpu_memory_allocated_mb": 812.5,
    "gpu_memory_reserved_mb": 1024.0,
}


@pytest.mark.smoke
def test_inference_stats_round_trip_between_processes(ros_node, launch_process, unique_topic):
    from mtl_perception.msg import InferenceStats

    publisher = launch_process(
        [sys.executable, ros_harness.__file__, "publish", "mtl_perception/msg/InferenceStats",
         unique_topic, json.dumps(STATS_FIELDS), "--rate", "20"], name="stats_publisher")
    ros_node.wait_for_publisher(unique_topic, timeout=20.0)
    received = ros_node.wait_for_messages(unique_topic, InferenceStats, count=3, timeout=20.0)

    assert len(received) == 3
    for msg in received:
        assert msg.header.stamp.sec == 1700000000
        assert msg.header.stamp.nanosec == 123456789
        assert msg.header.frame_id == "camera_optical"
        for name, value in STATS_FIELDS.items():
            if name != "header":
                assert getattr(msg, name) == value, name
    assert publisher.returncode is None, publisher.output()
