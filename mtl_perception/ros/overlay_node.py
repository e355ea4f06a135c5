"""Overlay and label_info for graphs that split the tasks over two nodes (the naive baseline).

The multitask node draws its own overlay. In the naive graph the mask and the boxes come
from different nodes, so this node pairs ``segmentation`` and ``detections`` with the
camera ``image`` of the same stamp and publishes one ``overlay``, and publishes the one
``label_info`` of both tasks (read from the two checkpoints). Same topics as the
multitask node: consumers and rviz see the same contract on either graph.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.checkpoint import load_checkpoint
from mtl_perception.image_msg_codec import ImageConversionError, image_to_array, to_rgb
from mtl_perception.bags.typestore import detections_to_arrays
from mtl_perception.ros.messages import detection_labels, label_info_msg, rgb_msg
from mtl_perception.ros.paths import resolve_package_path
from mtl_perception.ros.qos import LATCHED_QOS, RELIABLE_QOS, qos_from_name
from mtl_perception.visualization import render_overlay

_CACHE = 30  # frames of each input kept while waiting for the other two


def _stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class OverlayNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("overlay_node", **kwargs)
        self.declare_parameter("segmentation_checkpoint", "", ParameterDescriptor(
            description="Checkpoint of the segmentation node (for class names).", read_only=True))
        self.declare_parameter("detection_checkpoint", "", ParameterDescriptor(
            description="Checkpoint of the detection node (for class names).", read_only=True))
        self.declare_parameter("reliability", "best_effort", ParameterDescriptor(
            description="QoS reliability of the camera subscription: best_effort or reliable.", read_only=True))
        self.declare_parameter("score_threshold", 0.3, ParameterDescriptor(description="Threshold reported in label_info."))
        self.class_names = self._read_class_names()
        self.overlay_pub = self.create_publisher(Image, "overlay", RELIABLE_QOS)
        self.label_info_pub = self.create_publisher(LabelInfo, "label_info", LATCHED_QOS)
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        self.label_info_pub.publish(label_info_msg(header, self.class_names, self.get_parameter("score_threshold").value))
        self._frames: dict[str, OrderedDict] = {"image": OrderedDict(), "segmentation": OrderedDict(), "detections": OrderedDict()}
        qos = qos_from_name(self.get_parameter("reliability").value, 5)
        self.create_subscription(Image, "image", self.image_callback, qos)
        self.create_subscription(Image, "segmentation", self.segmentation_callback, RELIABLE_QOS)
        self.create_subscription(Detection2DArray, "detections", self.detections_callback, RELIABLE_QOS)

    def _read_class_names(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for task in ("segmentation", "detection"):
            value = self.get_parameter(f"{task}_checkpoint").value
            if not value:
                raise ValueError(f"parameter '{task}_checkpoint' is empty")
            checkpoint = load_checkpoint(resolve_package_path(value), mmap=True)
            if task not in checkpoint.class_names:
                raise ValueError(f"{checkpoint.path} has no {task} classes")
            names[task] = list(checkpoint.class_names[task])
        return names

    def image_callback(self, msg: Image) -> None:
        if self.overlay_pub.get_subscription_count() > 0:
            self._store("image", msg)

    def segmentation_callback(self, msg: Image) -> None:
        self._store("segmentation", msg)

    def detections_callback(self, msg: Detection2DArray) -> None:
        self._store("detections", msg)

    def _store(self, kind: str, msg) -> None:
        frames = self._frames[kind]
        frames[_stamp_key(msg.header)] = msg
        while len(frames) > _CACHE:
            frames.popitem(last=False)
        key = _stamp_key(msg.header)
        if all(key in f for f in self._frames.values()):
            image, mask, dets = (self._frames[k].pop(key) for k in ("image", "segmentation", "detections"))
            self._publish_overlay(image, mask, dets)

    def _publish_overlay(self, image_msg: Image, mask_msg: Image, detections: Detection2DArray) -> None:
        if self.overlay_pub.get_subscription_count() == 0:
            return
        try:
            image = to_rgb(image_to_array(image_msg), image_msg.encoding)
            mask = image_to_array(mask_msg)
        except (ImageConversionError, ValueError) as exc:
            self.get_logger().error(f"cannot draw overlay: {exc}", throttle_duration_sec=5.0)
            return
        names = self.class_names["detection"]
        boxes, class_ids, scores = detections_to_arrays(detections)
        labels = detection_labels(class_ids, names)
        known = labels >= 0
        overlay = render_overlay(image, mask, boxes[known], labels[known], scores[known], names)
        self.overlay_pub.publish(rgb_msg(image_msg.header, overlay))


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = OverlayNode()
    except Exception as exc:  # bad parameters or checkpoints: clear message, non-zero exit
        print(f"overlay_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
