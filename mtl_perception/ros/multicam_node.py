"""Multi-camera multitask node: one network serves N camera streams, one batched forward pass per tick.

Parameter ``cameras`` (e.g. ``[front, down]``) names the streams. Each is a namespace relative
to the node's, with its own input ``<camera>/image`` (``<camera>/image/compressed`` with
``input_transport: compressed``) and the multitask node's outputs under it:
``<camera>/detections``, ``<camera>/segmentation``, ``<camera>/segmentation/color``,
``<camera>/overlay``, ``<camera>/segmentation/label_info``, ``<camera>/detections/label_info``
and ``<camera>/stats``; every output copies its own frame's header. Everything else (parameters,
lifecycle, decoding, postprocess, message contract) is :class:`InferenceNode`'s.

Each tick takes the newest pending frame of every camera that has one (newest-frame-wins per
camera: a frame replaced while waiting counts as dropped for its camera), decodes them and runs
them through :meth:`Predictor.predict_batch`, whatever their sizes, at most ``max_batch`` frames
per pass. ``max_batch: 0`` (auto) is decided at configure by a measurement in the engine that
runs (:func:`measure_batching`: one pass of every camera's frame against one pass per frame, at
the input size, median of a few), since which wins depends on the engine, the device and the
threads (torch on one CPU thread: batched was slower, 4 frames 433-465 ms vs 256-281 ms one by
one on a 2-core Xeon VM). With onnxruntime the export is batch-dynamic, so a batch is one
pass; the model is loaded once either way. A camera that sends
nothing is simply not in the tick, so it never stalls the others. Counters, stats and
/diagnostics (one status per camera) are per camera. ``stats`` of a frame report its pass's
network time; ``queue_ms`` is all its waiting, for the tick and for the tick's earlier passes.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from mtl_perception.image_msg_codec import ImageConversionError
from mtl_perception.ros.diagnostics import FrameHealth, diagnostic_array, health_status
from mtl_perception.ros.inference_node import InferenceNode, engine_values, run_node

# A relative ROS namespace: tokens of letters, digits and underscores, not starting with a digit.
_CAMERA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def check_camera_names(names: list[str] | None) -> list[str]:
    """The camera names, or ValueError saying what is wrong (none, invalid or repeated names)."""
    names = list(names or [])
    if not names:
        raise ValueError("parameter 'cameras' is empty: name the camera namespaces, e.g. cameras:=[front,down]")
    bad = [name for name in names if not _CAMERA_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"cameras {bad} are not relative ROS namespaces (letters, digits, '_', '/'-separated)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"cameras {repeated} are listed more than once")
    return names


@dataclass
class CameraStream:
    """One camera's publishers, subscription, one-frame slot and counters."""

    name: str
    outputs: dict[str, object]
    subscription: object = None
    pending: tuple[object, float] | None = None  # (message, time.monotonic() at callback entry)
    received: int = 0
    processed: int = 0
    dropped: int = 0
    health: FrameHealth = field(default_factory=FrameHealth)

    def offer(self, msg, received: float) -> None:
        """Take a new frame (under the node's condition), counting the one it replaces as dropped."""
        replaced, self.pending = self.pending, (msg, received)
        self.received += 1
        if replaced is not None:
            self.dropped += 1
            self.health.dropped()

    def served(self, latency_ms: float) -> tuple[int, int, int]:
        """Count a frame served (under the node's condition); returns (received, processed, dropped)."""
        self.processed += 1
        self.health.processed(latency_ms)
        return self.received, self.processed, self.dropped


class MulticamNode(InferenceNode):
    TASKS = ("segmentation", "detection")

    def __init__(self, **kwargs) -> None:
        super().__init__("multicam_node", **kwargs)
        self.declare_parameter("cameras", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Camera namespaces, each with its own '<camera>/image' input and outputs under '<camera>/'.",
            read_only=True))
        self.declare_parameter("max_batch", 0, ParameterDescriptor(
            description="Frames per network pass; 0 = auto: every camera of the tick in one pass or one frame per "
                        "pass, whichever a timing in this engine at configure finds faster.",
            read_only=True, integer_range=[IntegerRange(from_value=0, to_value=1024)]))
        self.cameras: dict[str, CameraStream] = {}
        self.max_batch = 1
        self.batching: dict = {}  # how max_batch was chosen (the auto measurement), for the log and /diagnostics

    # -- lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the camera names, then load the model and create every camera's publishers."""
        try:
            check_camera_names(self._param("cameras"))
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        result = super().on_configure(state)
        if self.predictor is not None:
            asked = self._param("max_batch")
            if asked:
                self.max_batch, self.batching = asked, {"max_batch": asked, "chosen_by": "the max_batch parameter"}
            else:
                self.batching = measure_batching(self.predictor, len(self.cameras))
                self.max_batch = self.batching["max_batch"]
            if self.predictor.device.type == "cuda":  # capture/tune every batch size now, not on a camera's frame
                dummy = np.zeros((*self.predictor.input_size, 3), np.uint8)
                for size in range(2, min(self.max_batch, len(self.cameras)) + 1):
                    self.predictor.predict_batch([dummy] * size)
            self.get_logger().info(f"cameras {list(self.cameras)}, at most {self.max_batch} frame(s) per network pass "
                                   f"({self.batching['chosen_by']})")
        return result

    def predictor_options(self) -> dict:
        """onnxruntime: a batch-dynamic export, so a tick's frames can run as one pass."""
        return {"dynamic_batch": self._param("max_batch") != 1}

    def create_outputs(self) -> None:
        self._outputs = {}
        self.cameras = {name: CameraStream(name, self.output_publishers(f"{name}/"))
                        for name in check_camera_names(self._param("cameras"))}

    def subscribe(self, qos) -> str:
        for camera in self.cameras.values():
            callback = functools.partial(self.camera_callback, camera)
            camera.subscription = self.image_subscription(f"{camera.name}/image", callback, qos)
        return ", ".join(camera.subscription.topic_name for camera in self.cameras.values())

    def stop(self) -> None:
        super().stop()
        for camera in self.cameras.values():
            camera.pending = None
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
                camera.subscription = None

    def unload(self) -> None:
        for camera in self.cameras.values():
            for publisher in camera.outputs.values():
                self.destroy_lifecycle_publisher(publisher)
        self.cameras = {}
        super().unload()

    def _publish_label_info(self, threshold: float, outputs: dict | None = None) -> None:
        for camera in self.cameras.values():
            super()._publish_label_info(threshold, camera.outputs)

    # -- frames --------------------------------------------------------------------------------

    def camera_callback(self, camera: CameraStream, msg) -> None:
        """Keep only the camera's newest frame: one still waiting is replaced and counted as dropped."""
        received = time.monotonic()
        with self._condition:
            camera.offer(msg, received)
            self._condition.notify()

    def _work_loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._stopping or any(c.pending is not None for c in self.cameras.values()))
                if self._stopping:
                    return
                tick = [(camera, *camera.pending) for camera in self.cameras.values() if camera.pending is not None]
                for camera, _, _ in tick:
                    camera.pending = None
            self.process_tick(tick)

    def _drop_frame(self, camera: CameraStream, kind: str, detail: str) -> None:
        with self._condition:
            camera.dropped += 1
        camera.health.failed(f"{kind}: {detail}")
        self._errors.error(f"{camera.name}: dropped frame: {kind}: {detail}")

    def process_tick(self, frames: list[tuple[CameraStream, object, float]]) -> None:
        """Decode the tick's frames, run them ``max_batch`` at a time, publish each camera's outputs; never raises.

        Args:
            frames: (camera, Image or CompressedImage, time.monotonic() at callback entry) per camera.
        """
        predictor = self.predictor
        if predictor is None:
            return
        start = time.monotonic()
        decoded = []
        for camera, msg, received in frames:
            try:
                decoded.append((camera, msg, received, self.decode_image(msg)))
            except (ImageConversionError, ValueError) as exc:
                self._drop_frame(camera, "bad input image", str(exc))
        decode_ms = (time.monotonic() - start) * 1e3
        for first in range(0, len(decoded), self.max_batch):
            self._run_pass(predictor, decoded[first:first + self.max_batch], decode_ms)

    def _run_pass(self, predictor, frames: list, decode_ms: float) -> None:
        """One network pass over ``frames`` (camera, msg, received, image), then their outputs and stats."""
        try:
            color = any(self.wants_color(camera.outputs) for camera, *_ in frames)
            predictions = predictor.predict_batch([image for *_, image in frames], color=color)
        except torch.cuda.OutOfMemoryError:
            predictor.empty_cache()
            for camera, *_ in frames:
                self._drop_frame(camera, "CUDA out of memory", f"pass of {len(frames)}; cache emptied, continuing")
            return
        except Exception as exc:  # the node never dies on data
            for camera, *_ in frames:
                self._drop_frame(camera, "inference failed", f"{type(exc).__name__}: {exc}")
            return
        publish_start = time.monotonic()
        for (camera, msg, received, image), prediction in zip(frames, predictions):
            try:
                self.publish_outputs(msg.header, image, prediction, camera.outputs)
            except Exception as exc:
                self._drop_frame(camera, "publishing failed", f"{type(exc).__name__}: {exc}")
                continue
            done = time.monotonic()
            total_ms = (done - received) * 1e3
            with self._condition:
                counters = camera.served(total_ms)
            self.publish_stats(camera.outputs["stats"], self.frame_stats(
                msg.header, predictor, prediction.timings, counters, decode_ms, (done - publish_start) * 1e3, total_ms,
                times=(received, done)))

    # -- diagnostics ---------------------------------------------------------------------------

    def diagnostics_callback(self) -> None:
        """One DiagnosticStatus per camera (``<node>: <camera> inference``)."""
        predictor = self.predictor
        device = str(predictor.device) if predictor else "none"
        shared = {"device": device, "model": predictor.model_name if predictor else "none", **engine_values(predictor)}
        if self.batching:
            shared["max_batch"] = f"{self.max_batch} ({self.batching['chosen_by']})"
        if predictor is not None:
            allocated, reserved = predictor.gpu_memory_mb()
            shared.update(gpu_memory_allocated_mb=f"{allocated:.1f}", gpu_memory_reserved_mb=f"{reserved:.1f}")
        statuses = []
        for camera in list(self.cameras.values()):
            with self._condition:
                values = {"camera": camera.name, "frames_received": camera.received,
                          "frames_processed": camera.processed, "frames_dropped": camera.dropped, **shared}
            if camera.health.last_error:
                values["last_error"] = camera.health.last_error
            statuses.append(health_status(f"{self.get_fully_qualified_name()}: {camera.name} inference", device,
                                          self.state_label, camera.health.window(),
                                          float(self._param("diagnostics_slow_ms")), values))
        if not statuses:  # unconfigured: no cameras yet, still report the node
            statuses.append(health_status(f"{self.get_fully_qualified_name()}: inference", device, self.state_label,
                                          FrameHealth().window(), 0.0, shared))
        array = diagnostic_array(self.get_clock().now().to_msg(), statuses[0])
        array.status = statuses
        self._diagnostics.publish(array)


def measure_batching(predictor, cameras: int, repeats: int = 3) -> dict:
    """Time one tick of ``cameras`` frames (at the input size) as one batched pass and as one pass
    per frame, in ``predictor``'s engine; ``max_batch`` is the faster (ties go one by one).

    Each way runs once untimed (first-call costs: allocations, graph capture) and then
    ``repeats`` times; the medians are compared. One camera needs no measurement.
    """
    if cameras <= 1:
        return {"max_batch": 1, "chosen_by": "auto: one camera"}
    frames = [np.random.default_rng(index).integers(0, 256, (*predictor.input_size, 3), dtype=np.uint8)
              for index in range(cameras)]
    ways = {"batched": lambda: predictor.predict_batch(frames), "one_by_one": lambda: [predictor.predict(f) for f in frames]}
    medians = {}
    for name, run in ways.items():
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
        medians[name] = float(np.median(times))
    batched = medians["batched"] < medians["one_by_one"]
    return {"max_batch": cameras if batched else 1, "batched_ms": medians["batched"], "one_by_one_ms": medians["one_by_one"],
            "chosen_by": f"auto: {cameras} frames batched {medians['batched']:.1f} ms vs one by one "
                         f"{medians['one_by_one']:.1f} ms in {predictor.engine.describe()}, median of {repeats}"}


def main(args=None) -> int:
    return run_node(MulticamNode, args)


if __name__ == "__main__":
    sys.exit(main())
