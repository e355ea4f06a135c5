"""The node base shared by ``multitask_node``, ``segmentation_node`` and ``detection_node``.

A thin shell around :class:`~mtl_perception.predictor.Predictor`: subclasses only say
which tasks they publish. Every node is a lifecycle node: ``configure`` loads the model,
``activate`` subscribes, ``deactivate`` stops work and frees cached GPU memory,
``cleanup`` unloads. With ``managed: false`` (the default) it configures and activates
itself at start.

Topics (relative, so namespaces and remaps apply):

* in: ``image`` (sensor_msgs/Image) or ``image/compressed`` (``input_transport: compressed``);
* out: ``segmentation`` (mono8 class indices), ``segmentation/color`` (rgb8),
  ``detections`` (vision_msgs/Detection2DArray), ``label_info`` (transient local),
  ``overlay`` (rgb8, only computed while subscribed) and ``stats`` (InferenceStats);
  every output copies the input header.

While a frame is in the network, a newer frame replaces the pending one (latency never
grows with a queue); replaced and bad frames are counted as dropped.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.image_msg_codec import ImageConversionError, compressed_to_array, image_to_array, to_rgb
from mtl_perception.msg import InferenceStats
from mtl_perception.postprocess import DetectionParams
from mtl_perception.predictor import Predictor
from mtl_perception.ros.messages import CLASS_ID_FORMATS, detections_msg, label_info_msg, mask_msg, rgb_msg
from mtl_perception.ros.paths import resolve_package_path
from mtl_perception.ros.qos import LATCHED_QOS, RELIABLE_QOS, qos_from_name
from mtl_perception.visualization import colorize_mask, render_overlay

_DYNAMIC = ("score_threshold", "nms_iou", "max_detections", "class_allowlist")


def _choice(description: str, choices: tuple[str, ...], read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=f"{description} One of: {', '.join(choices)}.", read_only=read_only,
                               additional_constraints=f"one of {list(choices)}")


class InferenceNode(LifecycleNode):
    """Base of the inference nodes; ``TASKS`` names the outputs a subclass publishes."""

    TASKS: tuple[str, ...] = ()

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter("checkpoint", "", ParameterDescriptor(
            description="Model checkpoint (.pt): absolute, or relative to the package share directory.", read_only=True))
        self.declare_parameter("device", "auto", _choice("auto: CUDA if available, else CPU with a warning.", ("auto", "cuda", "cpu")))
        self.declare_parameter("precision", "fp32", _choice("Autocast precision on CUDA (fp16 falls back to fp32 on CPU).", ("fp32", "fp16", "bf16")))
        self.declare_parameter("input_height", 0, ParameterDescriptor(description="Network input height; 0 = the checkpoint's.", read_only=True))
        self.declare_parameter("input_width", 0, ParameterDescriptor(description="Network input width; 0 = the checkpoint's.", read_only=True))
        self.declare_parameter("score_threshold", 0.3, ParameterDescriptor(
            description="Minimum detection score (runtime-settable).",
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)]))
        self.declare_parameter("nms_iou", 0.45, ParameterDescriptor(
            description="Class-wise NMS IoU threshold (runtime-settable).",
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1.0)]))
        self.declare_parameter("max_detections", 100, ParameterDescriptor(
            description="Detections kept per image after NMS (runtime-settable).",
            integer_range=[IntegerRange(from_value=1, to_value=10000)]))
        self.declare_parameter("class_allowlist", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Detection class names to publish; unset or empty = all (runtime-settable)."))
        self.declare_parameter("class_id_format", "name", _choice(
            "Detection class_id: the class name, or 'index' = str(256 + class index), the id used in label_info.", CLASS_ID_FORMATS))
        self.declare_parameter("publish_overlay", True, ParameterDescriptor(
            description="Publish 'overlay' (mask and boxes drawn on the image) while someone subscribes.", read_only=True))
        self.declare_parameter("publish_label_info", True, ParameterDescriptor(
            description="Publish 'label_info' (transient local). Off for the naive graph's task nodes.", read_only=True))
        self.declare_parameter("reliability", "best_effort", _choice(
            "Input QoS reliability: best_effort (sensor data, camera drivers, ros2 bag play) or reliable.", ("best_effort", "reliable")))
        self.declare_parameter("input_transport", "raw", _choice("Subscribe to 'image' (raw) or 'image/compressed'.", ("raw", "compressed")))
        self.declare_parameter("cpu_threads", 0, ParameterDescriptor(
            description="torch intra-op threads of this process; 0 = torch's default (all cores).", read_only=True))
        self.declare_parameter("cuda_graph", False, ParameterDescriptor(description="Capture the network in a CUDA graph (CUDA only).", read_only=True))
        self.declare_parameter("managed", False, ParameterDescriptor(
            description="Run as a managed lifecycle node (wait for configure/activate); false = configure and activate at start.", read_only=True))
        self.add_on_set_parameters_callback(self.parameters_callback)

        self.predictor: Predictor | None = None
        self._outputs: dict[str, object] = {}
        self._subscription = None
        self._condition = threading.Condition()
        self._pending = None
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._last_logged: dict[str, float] = {}
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0

    # -- parameters ----------------------------------------------------------------------------

    def _param(self, name: str):
        """A parameter's value; None for one declared without a value (class_allowlist unset)."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _detection_params(self, overrides: dict) -> DetectionParams:
        values = {name: overrides.get(name, self._param(name)) for name in _DYNAMIC}
        allowlist = values["class_allowlist"] or []
        indices = self.predictor.class_indices(list(allowlist)) if (allowlist and self.predictor) else None
        return DetectionParams(score_threshold=float(values["score_threshold"]), nms_iou=float(values["nms_iou"]),
                               max_detections=int(values["max_detections"]), class_allowlist=indices)

    def parameters_callback(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate runtime changes; apply them to the predictor atomically or reject with a reason."""
        overrides = {p.name: p.value for p in parameters if p.name in _DYNAMIC}
        if not overrides:
            return SetParametersResult(successful=True)
        try:
            params = self._detection_params(overrides)
            if self.predictor is not None:
                self.predictor.set_detection_params(params)
            else:
                params.validate()
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.get_logger().info(f"detection parameters now {params}")
        return SetParametersResult(successful=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers."""
        checkpoint = self._param("checkpoint")
        if not checkpoint:
            self.get_logger().error("parameter 'checkpoint' is empty: set it to a model checkpoint (.pt)")
            return TransitionCallbackReturn.FAILURE
        size = (self._param("input_height"), self._param("input_width"))
        if self._param("cpu_threads") > 0:
            torch.set_num_threads(self._param("cpu_threads"))
        try:
            path = resolve_package_path(checkpoint)
            self.predictor = Predictor(path, device=self._param("device"), precision=self._param("precision"),
                                       input_size=size if all(size) else None, cuda_graph=self._param("cuda_graph"))
            missing = [t for t in self.TASKS if t not in self.predictor.tasks]
            if missing:
                raise ValueError(f"{path} is a {self.predictor.config.kind} checkpoint without the {', '.join(missing)} "
                                 f"branch this node publishes")
            extra = [t for t in self.predictor.tasks if t not in self.TASKS]
            if extra:
                self.get_logger().warning(f"{path} also has a {', '.join(extra)} branch that this node computes but does not publish")
            self.predictor.set_detection_params(self._detection_params({}))
        except Exception as exc:  # any load failure must fail the transition with a clear reason
            self.get_logger().error(f"cannot load the model: {exc}")
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        publish = self.create_lifecycle_publisher
        if "segmentation" in self.TASKS:
            self._outputs["segmentation"] = publish(Image, "segmentation", RELIABLE_QOS)
            self._outputs["segmentation/color"] = publish(Image, "segmentation/color", RELIABLE_QOS)
        if "detection" in self.TASKS:
            self._outputs["detections"] = publish(Detection2DArray, "detections", RELIABLE_QOS)
        if self._param("publish_overlay"):
            self._outputs["overlay"] = publish(Image, "overlay", RELIABLE_QOS)
        if self._param("publish_label_info"):
            self._outputs["label_info"] = publish(LabelInfo, "label_info", LATCHED_QOS)
        self._outputs["stats"] = publish(InferenceStats, "stats", RELIABLE_QOS)
        p = self.predictor
        self.get_logger().info(
            f"loaded {p.model_name} ({p.config.kind}, {p.config.trunk}) from {path} on {p.device} ({p.precision}), "
            f"input {p.input_size[0]}x{p.input_size[1]}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the inference worker."""
        result = super().on_activate(state)  # enables the lifecycle publishers
        if "label_info" in self._outputs:
            header = Image().header
            header.stamp = self.get_clock().now().to_msg()
            self._outputs["label_info"].publish(label_info_msg(header, self._published_class_names(),
                                                                  self._param("score_threshold")))
        qos = qos_from_name(self._param("reliability"), 1)
        if self._param("input_transport") == "compressed":
            topic = self.resolve_topic_name("image") + "/compressed"
            self._subscription = self.create_subscription(CompressedImage, topic, self.image_callback, qos)
        else:
            self._subscription = self.create_subscription(Image, "image", self.image_callback, qos)
        self._stopping = False
        self._worker = threading.Thread(target=self._work_loop, name="inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {self._subscription.topic_name} ({self._param('reliability')})")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop work and free cached GPU memory; the model stays loaded."""
        self._stop_worker()
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self.predictor is not None:
            self.predictor.empty_cache()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the model and remove the publishers."""
        self._unload()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._unload()
        return super().on_shutdown(state)

    def _unload(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()
        if self.predictor is not None:
            self.predictor.release()
            self.predictor = None

    def _published_class_names(self) -> dict[str, list[str]]:
        return {t: self.predictor.class_names[t] for t in self.TASKS}

    # -- frames --------------------------------------------------------------------------------

    def image_callback(self, msg) -> None:
        """Keep only the newest frame: a frame still waiting is replaced and counted as dropped."""
        with self._condition:
            self.frames_received += 1
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = msg
            self._condition.notify()

    def _stop_worker(self) -> None:
        with self._condition:
            self._stopping = True
            self._pending = None
            self._condition.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        self._worker = None

    def _work_loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                msg, self._pending = self._pending, None
            self.process_frame(msg)

    def _log_error(self, text: str, period: float = 5.0) -> None:
        """Log each distinct problem at most once per ``period`` seconds."""
        now = time.monotonic()
        if now - self._last_logged.get(text, -period) >= period:
            self._last_logged[text] = now
            self.get_logger().error(text)

    def _drop(self, reason: str) -> None:
        with self._condition:
            self.frames_dropped += 1
        self._log_error(f"dropped frame: {reason}")

    def process_frame(self, msg) -> None:
        """Decode, run the network and publish; never raises (a bad frame is dropped and logged)."""
        predictor = self.predictor
        if predictor is None:
            return
        start = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                image = compressed_to_array(msg)
            else:
                image = to_rgb(image_to_array(msg), msg.encoding)
        except (ImageConversionError, ValueError) as exc:
            self._drop(f"bad input image: {exc}")
            return
        decode_ms = (time.perf_counter() - start) * 1e3
        try:
            prediction = predictor.predict(image)
        except torch.cuda.OutOfMemoryError:
            predictor.empty_cache()
            self._drop("CUDA out of memory (cache emptied; continuing with the next frame)")
            return
        except Exception as exc:  # the node never dies on data
            self._drop(f"inference failed: {type(exc).__name__}: {exc}")
            return
        publish_start = time.perf_counter()
        try:
            self.publish_outputs(msg.header, image, prediction)
        except Exception as exc:
            self._drop(f"publishing failed: {type(exc).__name__}: {exc}")
            return
        publish_ms = (time.perf_counter() - publish_start) * 1e3
        with self._condition:
            self.frames_processed += 1
            counters = (self.frames_received, self.frames_processed, self.frames_dropped)
        timings = prediction.timings
        allocated, reserved = predictor.gpu_memory_mb()
        stats = InferenceStats(
            header=msg.header, node_name=self.get_fully_qualified_name(), model_name=predictor.model_name,
            device=str(predictor.device), precision=predictor.precision,
            preprocess_ms=decode_ms + timings.preprocess_ms, inference_ms=timings.inference_ms,
            postprocess_ms=timings.postprocess_ms + publish_ms, total_ms=(time.perf_counter() - start) * 1e3,
            frames_received=counters[0], frames_processed=counters[1], frames_dropped=counters[2],
            gpu_memory_allocated_mb=allocated, gpu_memory_reserved_mb=reserved)
        self._outputs["stats"].publish(stats)

    def publish_outputs(self, header, image: np.ndarray, prediction) -> None:
        """Publish this node's outputs for one frame, each with ``header`` copied."""
        pubs = self._outputs
        names = self.predictor.class_names.get("detection", [])
        if "segmentation" in pubs:
            pubs["segmentation"].publish(mask_msg(header, prediction.mask))
            pubs["segmentation/color"].publish(rgb_msg(header, colorize_mask(prediction.mask)))
        if "detections" in pubs:
            pubs["detections"].publish(detections_msg(header, prediction.boxes, prediction.scores, prediction.labels,
                                                      names, self._param("class_id_format")))
        overlay = pubs.get("overlay")
        if overlay is not None and overlay.get_subscription_count() > 0:
            mask = prediction.mask if "segmentation" in self.TASKS else None
            if "detection" in self.TASKS:
                boxes, labels, scores = prediction.boxes, prediction.labels, prediction.scores
            else:
                boxes, labels, scores = np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)
            overlay.publish(rgb_msg(header, render_overlay(image, mask, boxes, labels, scores, names)))


def run_node(node_class: type[InferenceNode], args: list[str] | None = None) -> int:
    """Entry point shared by the node executables. Exit code 1 if a plain node can't start."""
    rclpy.init(args=args)
    node = node_class()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if not node.get_parameter("managed").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed; exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("activate failed; exiting")
                return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code
