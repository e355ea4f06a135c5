"""Shared helpers for the node tests: tiny checkpoints, images, publishing and service calls."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import ros_harness

SEG_NAMES = ["background", "road", "building"]
DET_NAMES = ["person", "car"]
TINY = dict(trunk="resnet18", input_size=(64, 80), num_seg_classes=3, num_det_classes=2,
            det_extra_channels=(32, 32, 32), seg_head_channels=16, anchor_min_ratio=0.2)


def make_tiny_checkpoints(directory: Path) -> dict[str, Path]:
    """Untrained multitask + single-task checkpoints, small enough to start in a second."""
    from mtl_perception.checkpoint import make_checkpoint, save_checkpoint
    from mtl_perception.models import ModelConfig, build_model, single_task_config

    torch.manual_seed(0)
    config = ModelConfig(**TINY)
    names = {"segmentation": SEG_NAMES, "detection": DET_NAMES}
    paths = {}
    for kind, cfg in (("multitask", config), ("segmentation", single_task_config(config, "segmentation")),
                      ("detection", single_task_config(config, "detection"))):
        model = build_model(cfg).eval()
        # Bias the classifier towards "car" so that untrained models still produce boxes.
        if cfg.has_detection:
            for layer in model.det_head.head.classification_head.module_list:
                layer.bias.data.view(-1, 3)[:, 2] += 6.0
        paths[kind] = save_checkpoint(make_checkpoint(model, {t: names[t] for t in cfg.tasks}, {"name": f"tiny-{kind}"}),
                                      directory / f"tiny_{kind}.pt")
    return paths


def sample_image(height: int = 120, width: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[height // 4: height // 2, width // 4: width // 2] = (220, 40, 40)
    return image


def image_msg(array: np.ndarray, stamp_sec: int, frame_id: str = "camera_optical", encoding: str = "rgb8"):
    from mtl_perception.ros.image_msg_builders import array_to_image_msg

    msg = array_to_image_msg(array, encoding)
    msg.header.stamp.sec = stamp_sec
    msg.header.stamp.nanosec = 123456
    msg.header.frame_id = frame_id
    return msg


def sensor_publisher(node, topic: str, msg_type=None):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    return node.create_publisher(msg_type or Image, topic, qos_profile_sensor_data)


def reliable_qos(depth: int = 50):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def latched_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_for_stamp(collectors: dict, publish, stamp_sec: int, timeout: float = 60.0, period: float = 1.0) -> dict:
    """Publish (again every ``period`` s) until every collector holds a message with ``stamp_sec``."""
    deadline = time.monotonic() + timeout
    found: dict = {}
    next_publish = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_publish:
            publish()
            next_publish = time.monotonic() + period
        for name, collector in collectors.items():
            if name not in found:
                match = [m for m in list(collector.messages) if m.header.stamp.sec == stamp_sec]
                if match:
                    found[name] = match[0]
        if len(found) == len(collectors):
            return found
        time.sleep(0.05)
    missing = sorted(set(collectors) - set(found))
    raise TimeoutError(f"no output with stamp {stamp_sec} on {missing} within {timeout} s")


def call_service(node, srv_type, name: str, request, timeout: float = 20.0, resend_after: float | None = None):
    """Call a service and wait for the answer. ``resend_after`` (idempotent queries only): send the
    request again after that many seconds without an answer; a server just discovered can miss
    the first request's response (its writer not yet matched to the client's reader)."""
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available")
        futures = [client.call_async(request)]
        deadline = time.monotonic() + timeout
        sent = time.monotonic()
        while not any(f.done() for f in futures):
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"service {name} did not answer")
            if resend_after is not None and now - sent > resend_after:
                futures.append(client.call_async(request))
                sent = now
            time.sleep(0.02)
        return next(f for f in futures if f.done()).result()
    finally:
        node.destroy_client(client)


def set_parameters(node, target: str, values: dict):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call_service(node, SetParameters, f"{target}/set_parameters", request).results


def change_state(node, target: str, transition_id: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    return call_service(node, ChangeState, f"{target}/change_state",
                        ChangeState.Request(transition=Transition(id=transition_id)), timeout=60.0).success


def get_state(node, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    return call_service(node, GetState, f"{target}/get_state", GetState.Request(), resend_after=3.0).current_state.label


def node_command(executable: str, *params: str) -> list[str]:
    """The installed executable with ``-p`` parameters (as ``ros2 run`` would start it)."""
    command = [sys.executable, str(ros_harness.installed_executable(executable)), "--ros-args"]
    for param in params:
        command += ["-p", param]
    return command
