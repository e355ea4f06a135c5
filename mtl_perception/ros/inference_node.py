"""The node base shared by ``multitask_node``, ``segmentation_node`` and ``detection_node``.

A thin shell around :class:`~mtl_perception.predictor.Predictor`: subclasses only say
which tasks they publish. Every node is a lifecycle node: ``configure`` loads the model,
``activate`` subscribes, ``deactivate`` stops work and frees cached GPU memory,
``cleanup`` unloads, ``shutdown`` ends the process. With ``managed: false`` (the default) it
configures and activates itself at start.

Topics (relative, so namespaces and remaps apply):

* in: ``image`` (sensor_msgs/Image) or ``image/compressed`` (``input_transport: compressed``);
* out, in this order per frame: ``detections`` (vision_msgs/Detection2DArray),
  ``segmentation`` (mono8 class indices), ``segmentation/color`` (rgb8), ``overlay`` (rgb8,
  only computed while subscribed) and ``stats`` (InferenceStats); every output copies the
  input header. ``segmentation/label_info`` and ``detections/label_info`` (transient local,
  class ids 0..N-1, see :mod:`mtl_perception.vision_labels`) describe the classes;
  ``/diagnostics`` reports health about once a second.

While a frame is in the network, a newer frame replaces the pending one (latency never
grows with a queue); replaced and bad frames are counted as dropped. The worker is a plain
thread with a one-slot condition rather than a MultiThreadedExecutor: the slot must be
replaced by the executor's callback while inference runs, which a condition says directly.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from mtl_perception.heap import LargeFrameTrimmer
from mtl_perception.image_msg_codec import (CAMERA_MAX_PIXELS, ImageConversionError, compressed_to_array, image_to_array,
                                            to_rgb)
from mtl_perception.msg import InferenceStats
from mtl_perception.engines.backends import BACKENDS, PRECISIONS
from mtl_perception.engines.calibration import DEFAULT_CALIBRATION_FRAMES
from mtl_perception.postprocess import DetectionParams
from mtl_perception.predictor import Predictor
from mtl_perception.predictor_settings import (ENGINE_PARAMETERS, POSTPROCESS_PARAMETERS, detection_params, input_size,
                                               predictor_from_parameters)
from mtl_perception.ros.diagnostics import (DIAGNOSTICS_PERIOD_S, DIAGNOSTICS_TOPIC, FrameHealth, diagnostic_array,
                                            health_status)
from mtl_perception.ros.error_log import ThrottledErrorLog
from mtl_perception.ros.managed_node import ManagedNode, run_node  # noqa: F401 (run_node: the node files' main)
from mtl_perception.ros.messages import detections_msg, label_info_msg, mask_msg, rgb_msg
from mtl_perception.ros.paths import resolve_package_path
from mtl_perception.ros.qos import LATCHED_QOS, RELIABLE_QOS, qos_from_name
from mtl_perception.vision_labels import CLASS_ID_FORMATS, DETECTION_LABEL_INFO_TOPIC, SEGMENTATION_LABEL_INFO_TOPIC
from mtl_perception.visualization import render_overlay

_DYNAMIC = ("score_threshold", "nms_iou", "max_detections", "class_allowlist")
MAX_DETECTIONS_LIMIT = 10000


class InferenceNode(ManagedNode):
    """Base of the inference nodes; ``TASKS`` names the outputs a subclass publishes."""

    TASKS: tuple[str, ...] = ()

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter("checkpoint", "", ParameterDescriptor(
            description="Model checkpoint (.pt, or a .onnx made by mtl-export): absolute, or relative to the package "
                        "share directory.", read_only=True))
        self.declare_parameter("device", "auto", ParameterDescriptor(
            description="auto: CUDA if available, else CPU with a warning; cuda, cuda:N or cpu (checked by the Predictor).",
            read_only=True))
        self.declare_choice("backend", "auto", "Inference engine. auto: onnxruntime on the CPU; on CUDA torch unless "
                            "onnxruntime has the CUDA or TensorRT provider (and torch for cuda_graph, fp16, bf16).",
                            BACKENDS)
        self.declare_choice("precision", "fp32", "fp32; fp16/bf16: torch autocast (fp16 falls back to fp32 on CPU); "
                            "int8: onnxruntime on the CPU (an int8 .onnx checkpoint, or a .pt with calibration).",
                            PRECISIONS)
        self.declare_parameter("engine_cache_dir", "", ParameterDescriptor(
            description="Where a .pt checkpoint's onnxruntime export is cached; empty = $MTL_ENGINE_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/mtl_perception, else ~/.cache/mtl_perception.", read_only=True))
        self.declare_parameter("calibration", "", ParameterDescriptor(
            description="precision int8 from a .pt checkpoint: a rosbag or image folder of this camera's frames "
                        "(quantized once, then cached).", read_only=True))
        self.declare_parameter("calibration_frames", DEFAULT_CALIBRATION_FRAMES, ParameterDescriptor(
            description="Frames taken from 'calibration', spread evenly over it.", read_only=True,
            integer_range=[IntegerRange(from_value=1, to_value=10000)]))
        self.declare_parameter("input_height", 0, ParameterDescriptor(
            description="Network input height; 0 = the checkpoint's. Set both input_height and input_width, or neither.", read_only=True))
        self.declare_parameter("input_width", 0, ParameterDescriptor(
            description="Network input width; 0 = the checkpoint's. Set both input_height and input_width, or neither.", read_only=True))
        self.declare_parameter("score_threshold", 0.3, ParameterDescriptor(
            description="Minimum detection score (runtime-settable; republished in detections/label_info).",
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)]))
        self.declare_parameter("nms_iou", 0.45, ParameterDescriptor(
            description="Class-wise NMS IoU threshold (runtime-settable).",
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1.0)]))
        self.declare_parameter("max_detections", 100, ParameterDescriptor(
            description="Detections kept per image after NMS (runtime-settable).",
            integer_range=[IntegerRange(from_value=1, to_value=MAX_DETECTIONS_LIMIT)]))
        self.declare_parameter("class_allowlist", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Detection class names to publish; unset or empty = all (runtime-settable)."))
        self.declare_choice("class_id_format", "name",
                            "Detection class_id: the class name, or 'index' = str(class index), the id in detections/label_info.",
                            CLASS_ID_FORMATS)
        self.declare_parameter("publish_overlay", True, ParameterDescriptor(
            description="Publish 'overlay' (mask and boxes drawn on the image) while someone subscribes.", read_only=True))
        self.declare_parameter("publish_label_info", True, ParameterDescriptor(
            description="Publish segmentation/label_info and detections/label_info (transient local).", read_only=True))
        self.declare_choice("reliability", "best_effort",
                            "Input QoS reliability: best_effort (sensor data, camera drivers, ros2 bag play) or reliable.",
                            ("best_effort", "reliable"))
        self.declare_choice("input_transport", "raw", "Subscribe to 'image' (raw) or 'image/compressed'.", ("raw", "compressed"))
        self.declare_parameter("max_input_pixels", CAMERA_MAX_PIXELS, ParameterDescriptor(
            description="Drop input frames with more pixels than this (checked from the header, before decoding); "
                        "default 3840x2160.", read_only=True, integer_range=[IntegerRange(from_value=1, to_value=2**31 - 1)]))
        self.declare_parameter("cpu_threads", 0, ParameterDescriptor(
            description="Intra-op threads of this process (torch's, and onnxruntime's with one inter-op thread); "
                        "0 = the engines' default (all cores).", read_only=True))
        self.declare_parameter("cuda_graph", False, ParameterDescriptor(description="Capture the network in a CUDA graph (CUDA only).", read_only=True))
        self.declare_parameter("diagnostics_slow_ms", 200.0, ParameterDescriptor(
            description="/diagnostics turns WARN when the median latency exceeds this (ms); 0 = never."))
        self.add_on_set_parameters_callback(self.parameters_callback)

        self.predictor: Predictor | None = None
        self._outputs: dict[str, object] = {}
        self._subscription = None
        self._condition = threading.Condition()
        self._pending: tuple[object, float] | None = None  # (message, time.monotonic() at callback entry)
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._errors = ThrottledErrorLog(self.get_logger())
        self._health = FrameHealth()
        self._trimmer = LargeFrameTrimmer()  # memory back after a burst of large frames
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, RELIABLE_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self.diagnostics_callback)

    # -- parameters ----------------------------------------------------------------------------

    def _param(self, name: str):
        """A parameter's value; None for one declared without a value (class_allowlist unset)."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _detection_params(self, overrides: dict) -> DetectionParams:
        values = {name: overrides.get(name, self._param(name)) for name in _DYNAMIC}
        if self.predictor is None:  # names are checked against the model's classes once it is loaded
            values["class_allowlist"] = None
        return detection_params(values, self.predictor.class_names.get("detection") if self.predictor else None)

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
        if "score_threshold" in overrides and self.state_label == "active":
            self._publish_label_info(params.score_threshold)
        return SetParametersResult(successful=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers."""
        if not self.check_choices():
            return TransitionCallbackReturn.FAILURE
        try:
            input_size(self.predictor_parameters())
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        if not self._param("checkpoint"):
            self.get_logger().error("parameter 'checkpoint' is empty: set it to a model checkpoint (.pt)")
            return TransitionCallbackReturn.FAILURE
        try:
            path = resolve_package_path(self._param("checkpoint"))
            self.predictor = predictor_from_parameters(self.predictor_parameters(), resolve_package_path,
                                                       **self.predictor_options())
            missing = [t for t in self.TASKS if t not in self.predictor.tasks]
            if missing:
                raise ValueError(f"{path} is a {self.predictor.config.kind} checkpoint without the {', '.join(missing)} "
                                 f"branch this node publishes")
            extra = [t for t in self.predictor.tasks if t not in self.TASKS]
            if extra:
                self.get_logger().warning(f"{path} also has a {', '.join(extra)} branch that this node computes but does not publish")
        except Exception as exc:  # any load failure must fail the transition with a clear reason
            self.get_logger().error(f"cannot load the model: {exc}")
            self.predictor = None
            return TransitionCallbackReturn.FAILURE
        self.create_outputs()
        p = self.predictor
        self.get_logger().info(
            f"loaded {p.model_name} ({p.config.kind}, {p.config.trunk}) from {path} on {p.device}, "
            f"input {p.input_size[0]}x{p.input_size[1]}; engine {p.engine.describe()}{_engine_source(p)}")
        self.state_label = "inactive"
        return super().on_configure(state)

    def predictor_parameters(self) -> dict:
        """This node's parameters that decide its Predictor (:mod:`mtl_perception.predictor_settings`)."""
        return {name: self._param(name) for name in (*ENGINE_PARAMETERS, *POSTPROCESS_PARAMETERS)}

    def predictor_options(self) -> dict:
        """More :class:`Predictor` arguments of this kind of node (multicam: a batch-dynamic export)."""
        return {}

    def create_outputs(self) -> None:
        """Create this node's publishers (at configure); see :meth:`output_publishers`."""
        self._outputs = self.output_publishers()

    def output_publishers(self, prefix: str = "") -> dict[str, object]:
        """Lifecycle publishers of this node's outputs, keyed by topic name relative to ``prefix``
        (``front/`` publishes ``front/detections``, ...)."""
        publish = self.create_lifecycle_publisher
        outputs: dict[str, object] = {}
        if "detection" in self.TASKS:
            outputs["detections"] = publish(Detection2DArray, prefix + "detections", RELIABLE_QOS)
        if "segmentation" in self.TASKS:
            outputs["segmentation"] = publish(Image, prefix + "segmentation", RELIABLE_QOS)
            outputs["segmentation/color"] = publish(Image, prefix + "segmentation/color", RELIABLE_QOS)
        if self._param("publish_overlay"):
            outputs["overlay"] = publish(Image, prefix + "overlay", RELIABLE_QOS)
        if self._param("publish_label_info"):
            for task, topic in (("segmentation", SEGMENTATION_LABEL_INFO_TOPIC), ("detection", DETECTION_LABEL_INFO_TOPIC)):
                if task in self.TASKS:
                    outputs[topic] = publish(LabelInfo, prefix + topic, LATCHED_QOS)
        outputs["stats"] = publish(InferenceStats, prefix + "stats", RELIABLE_QOS)
        return outputs

    def image_subscription(self, topic: str, callback, qos):
        """Subscribe ``callback`` to camera ``topic``, or ``<topic>/compressed`` with ``input_transport: compressed``."""
        if self._param("input_transport") == "compressed":
            return self.create_subscription(CompressedImage, self.resolve_topic_name(topic) + "/compressed", callback, qos)
        return self.create_subscription(Image, topic, callback, qos)

    def subscribe(self, qos) -> str:
        """Subscribe to the camera input (at activate); returns what it listens on, for the log."""
        self._subscription = self.image_subscription("image", self.image_callback, qos)
        return self._subscription.topic_name

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the inference worker."""
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._publish_label_info(self._param("score_threshold"))
        listening = self.subscribe(qos_from_name(self._param("reliability"), 1))
        self._stopping = False
        self._worker = threading.Thread(target=self._work_loop, name="inference", daemon=True)
        self._worker.start()
        self.state_label = "active"
        self.get_logger().info(f"active: listening on {listening} ({self._param('reliability')})")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop work and free cached GPU memory; the model stays loaded."""
        result = super().on_deactivate(state)
        if self.predictor is not None:
            self.predictor.empty_cache()
        return result

    def stop(self) -> None:
        """Stop the worker and the camera subscription (idempotent)."""
        self._stop_worker()
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None

    def unload(self) -> None:
        """Remove the publishers and unload the model (idempotent)."""
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()
        if self.predictor is not None:
            self.predictor.release()
            self.predictor = None

    def _publish_label_info(self, threshold: float, outputs: dict | None = None) -> None:
        outputs = self._outputs if outputs is None else outputs
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        for task, topic in (("segmentation", SEGMENTATION_LABEL_INFO_TOPIC), ("detection", DETECTION_LABEL_INFO_TOPIC)):
            if topic in outputs:
                task_threshold = threshold if task == "detection" else 0.0
                outputs[topic].publish(label_info_msg(header, self.predictor.class_names[task], task_threshold))

    # -- frames --------------------------------------------------------------------------------

    def image_callback(self, msg) -> None:
        """Keep only the newest frame: a frame still waiting is replaced and counted as dropped."""
        received = time.monotonic()  # CLOCK_MONOTONIC, the clock of receive_time_ns (one machine-wide clock)
        with self._condition:
            self.frames_received += 1
            if self._pending is not None:
                self.frames_dropped += 1
                self._health.dropped()
            self._pending = (msg, received)
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
                (msg, received), self._pending = self._pending, None
            self.process_frame(msg, received)

    def _drop(self, kind: str, detail: str) -> None:
        with self._condition:
            self.frames_dropped += 1
        self._health.failed(f"{kind}: {detail}")
        self._errors.error(f"dropped frame: {kind}: {detail}")

    def process_frame(self, msg, received: float | None = None) -> None:
        """Decode, run the network and publish; never raises (a bad frame is dropped and logged).

        Args:
            msg: sensor_msgs Image or CompressedImage.
            received: ``time.monotonic()`` at image callback entry (default now).
        """
        predictor = self.predictor
        if predictor is None:
            return
        start = time.monotonic()
        received = start if received is None else received
        try:
            image = self.decode_image(msg)
        except (ImageConversionError, ValueError) as exc:
            self._drop("bad input image", str(exc))
            return
        decode_ms = (time.monotonic() - start) * 1e3
        try:
            prediction = predictor.predict(image, color=self.wants_color())
        except torch.cuda.OutOfMemoryError:
            predictor.empty_cache()
            self._drop("CUDA out of memory", "cache emptied; continuing with the next frame")
            return
        except Exception as exc:  # the node never dies on data
            self._drop("inference failed", f"{type(exc).__name__}: {exc}")
            return
        publish_start = time.monotonic()
        try:
            self.publish_outputs(msg.header, image, prediction)
        except Exception as exc:
            self._drop("publishing failed", f"{type(exc).__name__}: {exc}")
            return
        done = time.monotonic()
        with self._condition:
            self.frames_processed += 1
            counters = (self.frames_received, self.frames_processed, self.frames_dropped)
        total_ms = (done - received) * 1e3
        self._health.processed(total_ms)
        stats = self.frame_stats(msg.header, predictor, prediction.timings, counters, decode_ms,
                                 (done - publish_start) * 1e3, total_ms, queue_ms=(start - received) * 1e3,
                                 times=(received, done))
        self.publish_stats(self._outputs["stats"], stats)
        self._trimmer.frame_done(image.shape[0] * image.shape[1])

    def frame_stats(self, header, predictor: Predictor, timings, counters: tuple[int, int, int], decode_ms: float,
                    publish_ms: float, total_ms: float, queue_ms: float | None = None,
                    times: tuple[float, float] | None = None) -> InferenceStats:
        """One frame's InferenceStats: decoding counts as preprocessing and publishing as
        postprocessing (each also in its own field); ``queue_ms`` defaults to what ``total_ms``
        leaves over the stages; ``times``: ``time.monotonic()`` at callback entry and after the
        last output was published (receive_time_ns, publish_time_ns; 0 if not given)."""
        preprocess_ms = decode_ms + timings.preprocess_ms
        postprocess_ms = timings.postprocess_ms + publish_ms
        if queue_ms is None:
            queue_ms = total_ms - preprocess_ms - timings.inference_ms - postprocess_ms
        allocated, reserved = predictor.gpu_memory_mb()
        return InferenceStats(
            header=header, node_name=self.get_fully_qualified_name(), model_name=predictor.model_name,
            device=str(predictor.device), precision=predictor.precision, engine=predictor.engine.engine,
            execution_provider=predictor.engine.execution_provider, queue_ms=queue_ms,
            preprocess_ms=preprocess_ms, inference_ms=timings.inference_ms, postprocess_ms=postprocess_ms,
            total_ms=total_ms, frames_received=counters[0], frames_processed=counters[1], frames_dropped=counters[2],
            gpu_memory_allocated_mb=allocated, gpu_memory_reserved_mb=reserved, decode_ms=decode_ms,
            resize_ms=timings.preprocess_ms, outputs_ms=timings.postprocess_ms, publish_ms=publish_ms,
            receive_time_ns=round(times[0] * 1e9) if times else 0, publish_time_ns=round(times[1] * 1e9) if times else 0)

    def publish_stats(self, publisher, stats: InferenceStats) -> None:
        """Publish a frame's stats; a frame that finishes while the node shuts down is not an error."""
        try:
            publisher.publish(stats)
        except Exception as exc:
            if self.context.ok():
                self._errors.error(f"publishing stats failed: {type(exc).__name__}: {exc}")

    def wants_color(self, outputs: dict | None = None) -> bool:
        """Whether anyone subscribes to ``segmentation/color``: only then does the Predictor colour
        the mask (on the device) and the node publish it."""
        color = (self._outputs if outputs is None else outputs).get("segmentation/color")
        return color is not None and color.get_subscription_count() > 0

    def decode_image(self, msg) -> np.ndarray:
        """[H, W, 3] uint8 RGB of an Image or CompressedImage within ``max_input_pixels``;
        raises ImageConversionError or ValueError for a bad one."""
        max_pixels = self._param("max_input_pixels")
        if isinstance(msg, CompressedImage):
            return compressed_to_array(msg, max_pixels=max_pixels)
        return to_rgb(image_to_array(msg, max_pixels=max_pixels), msg.encoding)

    def publish_outputs(self, header, image: np.ndarray, prediction, outputs: dict | None = None) -> None:
        """Publish this node's outputs for one frame, each with ``header`` copied; detections first,
        since the full-resolution images take longer to build. ``outputs``: the publishers
        (default this node's, see :meth:`output_publishers`)."""
        pubs = self._outputs if outputs is None else outputs
        names = self.predictor.class_names.get("detection", [])
        if "detections" in pubs:
            pubs["detections"].publish(detections_msg(header, prediction.boxes, prediction.scores, prediction.labels,
                                                      names, self._param("class_id_format")))
        if "segmentation" in pubs:
            pubs["segmentation"].publish(mask_msg(header, prediction.mask))
            if prediction.color is not None and "segmentation/color" in pubs:
                pubs["segmentation/color"].publish(rgb_msg(header, prediction.color))
        overlay = pubs.get("overlay")
        if overlay is not None and overlay.get_subscription_count() > 0:
            mask = prediction.mask if "segmentation" in self.TASKS else None
            if "detection" in self.TASKS:
                boxes, labels, scores = prediction.boxes, prediction.labels, prediction.scores
            else:
                boxes, labels, scores = np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)
            overlay.publish(rgb_msg(header, render_overlay(image, mask, boxes, labels, scores, names)))

    # -- diagnostics ---------------------------------------------------------------------------

    def diagnostics_callback(self) -> None:
        """Publish this node's DiagnosticStatus (see :mod:`mtl_perception.ros.diagnostics`)."""
        predictor = self.predictor
        with self._condition:
            totals = {"frames_received": self.frames_received, "frames_processed": self.frames_processed,
                      "frames_dropped": self.frames_dropped}
        values = {"device": str(predictor.device) if predictor else "none",
                  "model": predictor.model_name if predictor else "none", **engine_values(predictor), **totals}
        if predictor is not None:
            allocated, reserved = predictor.gpu_memory_mb()
            values.update(gpu_memory_allocated_mb=f"{allocated:.1f}", gpu_memory_reserved_mb=f"{reserved:.1f}")
        if self._health.last_error:
            values["last_error"] = self._health.last_error
        status = health_status(f"{self.get_fully_qualified_name()}: inference", values["device"], self.state_label,
                               self._health.window(), float(self._param("diagnostics_slow_ms")), values)
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(), status))


def engine_values(predictor: Predictor | None) -> dict[str, str]:
    """/diagnostics values saying which engine, execution provider and precision run."""
    if predictor is None:
        return {"engine": "none"}
    info = predictor.engine
    values = {"engine": info.engine, "execution_provider": info.execution_provider, "precision": info.precision}
    if info.model_file:
        values["engine_file"] = info.model_file
    return values


def _engine_source(predictor: Predictor) -> str:
    """Where the engine's model came from, for the configure log."""
    entry = predictor.engine_cache
    if entry is None:
        return f" ({predictor.engine.model_file})" if predictor.engine.model_file else ""
    action = f"exported to the engine cache in {entry.seconds:.1f} s" if entry.built else "from the engine cache"
    return f" ({action}: {entry.path})"
