"""Overlay for graphs that split the tasks over two nodes (the naive baseline).

The multitask node draws its own overlay. In the naive graph the mask and the boxes come
from different nodes, so this node pairs ``segmentation`` and ``detections`` with the
camera ``image`` of the same header stamp (in any arrival order) and publishes one
``overlay`` with that header. Class names come from ``detections/label_info``, which the
detection node publishes (transient local); each task node publishes its own label_info,
so consumers and rviz see the same topics on either graph.

A lifecycle node like the inference nodes (``managed: true`` waits for configure/activate);
it reports on ``/diagnostics`` too: overlays per second, pairing latency, and camera frames
dropped because their mask or boxes never came.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.image_msg_codec import (CAMERA_MAX_PIXELS, ImageConversionError, compressed_to_array, image_to_array,
                                            to_rgb)
from mtl_perception.ros.diagnostics import (DIAGNOSTICS_PERIOD_S, DIAGNOSTICS_TOPIC, FrameHealth, diagnostic_array,
                                            health_status)
from mtl_perception.ros.error_log import ThrottledErrorLog
from mtl_perception.ros.managed_node import ManagedNode, run_node
from mtl_perception.ros.messages import rgb_msg
from mtl_perception.ros.qos import LATCHED_QOS, RELIABLE_QOS, qos_from_name
from mtl_perception.vision_labels import DETECTION_LABEL_INFO_TOPIC, detection_labels, detections_to_arrays, label_info_to_names
from mtl_perception.visualization import render_overlay

PAIRING_CACHE = 30  # stamps of each input kept while waiting for the other two
_KINDS = ("image", "segmentation", "detections")


def _stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class OverlayNode(ManagedNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("overlay_node", **kwargs)
        self.declare_choice("reliability", "best_effort", "QoS reliability of the camera subscription.",
                            ("best_effort", "reliable"))
        self.declare_choice("input_transport", "raw", "Draw on 'image' (raw) or 'image/compressed', as the task nodes read it.",
                            ("raw", "compressed"))
        self.declare_parameter("max_input_pixels", CAMERA_MAX_PIXELS, ParameterDescriptor(
            description="Camera frames with more pixels than this are not drawn (checked before decoding).",
            read_only=True, integer_range=[IntegerRange(from_value=1, to_value=2**31 - 1)]))
        self.detection_names: tuple[str, ...] | None = None
        self._overlay_pub = None
        self._label_info_sub = None
        self._input_subs: list = []
        self._frames: dict[str, OrderedDict] = {kind: OrderedDict() for kind in _KINDS}
        self._first_seen: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._errors = ThrottledErrorLog(self.get_logger())
        self._health = FrameHealth()
        self.overlays_published = 0
        self.images_dropped = 0
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self.diagnostics_callback)

    # -- lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self.check_choices():
            return TransitionCallbackReturn.FAILURE
        self._overlay_pub = self.create_lifecycle_publisher(Image, "overlay", RELIABLE_QOS)
        self._label_info_sub = self.create_subscription(LabelInfo, DETECTION_LABEL_INFO_TOPIC, self.label_info_callback,
                                                        LATCHED_QOS)
        self.state_label = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        camera_qos = qos_from_name(self.get_parameter("reliability").value, 5)
        self._input_subs = [
            self._camera_subscription(camera_qos),
            self.create_subscription(Image, "segmentation", self.segmentation_callback, RELIABLE_QOS),
            self.create_subscription(Detection2DArray, "detections", self.detections_callback, RELIABLE_QOS),
        ]
        self.state_label = "active"
        return result

    def _camera_subscription(self, qos):
        if self.get_parameter("input_transport").value == "compressed":
            return self.create_subscription(CompressedImage, self.resolve_topic_name("image") + "/compressed",
                                            self.image_callback, qos)
        return self.create_subscription(Image, "image", self.image_callback, qos)

    def stop(self) -> None:
        """Unsubscribe from the inputs and forget half-paired frames (idempotent)."""
        for subscription in self._input_subs:
            self.destroy_subscription(subscription)
        self._input_subs = []
        for frames in self._frames.values():
            frames.clear()
        self._first_seen.clear()

    def unload(self) -> None:
        """Remove the overlay publisher and the label_info subscription (idempotent)."""
        if self._overlay_pub is not None:
            self.destroy_lifecycle_publisher(self._overlay_pub)
            self._overlay_pub = None
        if self._label_info_sub is not None:
            self.destroy_subscription(self._label_info_sub)
            self._label_info_sub = None

    # -- inputs --------------------------------------------------------------------------------

    def label_info_callback(self, msg: LabelInfo) -> None:
        try:
            self.detection_names = label_info_to_names(msg)
        except ValueError as exc:
            self._errors.error(f"bad {DETECTION_LABEL_INFO_TOPIC}: {exc}")

    def image_callback(self, msg: Image | CompressedImage) -> None:
        if self._overlay_pub is not None and self._overlay_pub.get_subscription_count() > 0:
            self._store("image", msg)

    def segmentation_callback(self, msg: Image) -> None:
        self._store("segmentation", msg)

    def detections_callback(self, msg: Detection2DArray) -> None:
        self._store("detections", msg)

    def _store(self, kind: str, msg) -> None:
        key = _stamp_key(msg.header)
        self._first_seen.setdefault(key, time.perf_counter())
        frames = self._frames[kind]
        frames[key] = msg
        while len(frames) > PAIRING_CACHE:
            evicted, _ = frames.popitem(last=False)
            if kind == "image":
                self.images_dropped += 1
                self._health.dropped()
        if all(key in f for f in self._frames.values()):
            image, mask, detections = (self._frames[k].pop(key) for k in _KINDS)
            self._publish_overlay(image, mask, detections, self._first_seen.pop(key))
        while len(self._first_seen) > len(_KINDS) * PAIRING_CACHE:
            self._first_seen.popitem(last=False)

    def _publish_overlay(self, image_msg: Image | CompressedImage, mask_msg: Image, detections: Detection2DArray, first_seen: float) -> None:
        if self._overlay_pub is None or self._overlay_pub.get_subscription_count() == 0:
            return
        try:
            max_pixels = self.get_parameter("max_input_pixels").value
            if isinstance(image_msg, CompressedImage):
                image = compressed_to_array(image_msg, max_pixels=max_pixels)
            else:
                image = to_rgb(image_to_array(image_msg, max_pixels=max_pixels), image_msg.encoding)
            mask = image_to_array(mask_msg, max_pixels=max_pixels)
        except (ImageConversionError, ValueError) as exc:
            self._health.failed(f"cannot draw overlay: {exc}")
            self._errors.error(f"cannot draw overlay: {exc}")
            return
        names = self.detection_names or ()
        if self.detection_names is None and detections.detections:
            self._errors.error(f"boxes left out of the overlay: no {DETECTION_LABEL_INFO_TOPIC} received yet")
        boxes, class_ids, scores = detections_to_arrays(detections)
        labels = detection_labels(class_ids, names)
        known = labels >= 0
        overlay = render_overlay(image, mask, boxes[known], labels[known], scores[known], names)
        self._overlay_pub.publish(rgb_msg(image_msg.header, overlay))
        self.overlays_published += 1
        self._health.processed((time.perf_counter() - first_seen) * 1e3)

    # -- diagnostics ---------------------------------------------------------------------------

    def diagnostics_callback(self) -> None:
        values = {"device": "cpu", "model": "none (draws the task nodes' outputs)",
                  "overlays_published": self.overlays_published, "frames_dropped": self.images_dropped,
                  "detection_classes": len(self.detection_names) if self.detection_names is not None else "not received"}
        status = health_status(f"{self.get_fully_qualified_name()}: overlay", "cpu", self.state_label,
                               self._health.window(), 0.0, values)
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(), status))


def main(args=None) -> int:
    return run_node(OverlayNode, args)


if __name__ == "__main__":
    sys.exit(main())
