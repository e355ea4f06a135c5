"""Replaying frames to N cameras and timing each frame's answer (the measuring half of multicam_bench).

:class:`MulticamReplay` publishes on ``/<namespace>/<camera>/image`` and listens on
``/<namespace>/<camera>/stats`` (published last for every frame), so the same replay drives one
multicam_node (cameras under its namespace) or N multitask_nodes (one per camera namespace).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from mtl_perception.replay.throughput import RateTrial, events_per_second

# Stamps this replay invents, far from any recorded one; 1 ms apart.
_FIRST_STAMP_NS = 2_100_000_000 * 1_000_000_000


class MulticamReplay:
    """Publishers for every camera, subscriptions on their stats, and the timing of each frame.

    Args:
        namespace: the graph's namespace (``mcb`` → ``/mcb/<camera>/image``).
        frames: camera name -> the sensor_msgs Image messages it replays (in turn, over and over).
    """

    def __init__(self, namespace: str, frames: dict[str, list]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        from mtl_perception.msg import InferenceStats
        from sensor_msgs.msg import Image

        self._rclpy = rclpy
        self.cameras = list(frames)
        self.frames = frames
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtl_multicam_replay", context=self.context)
        self.publishers = {name: self.node.create_publisher(Image, f"/{namespace}/{name}/image", qos_profile_sensor_data)
                           for name in self.cameras}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for name in self.cameras:
            self.node.create_subscription(InferenceStats, f"/{namespace}/{name}/stats",
                                          lambda msg, n=name: self._stats_callback(n, msg), reliable)
        self.answers: dict[int, float] = {}  # stamp (ns) → monotonic arrival of its stats
        self.condition = threading.Condition()
        self._next_stamp = _FIRST_STAMP_NS
        self._next_frame = {name: 0 for name in self.cameras}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _stats_callback(self, camera: str, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.condition:
            self.answers.setdefault(stamp, time.monotonic())
            self.condition.notify_all()

    def publish(self, camera: str) -> tuple[int, float]:
        """Send ``camera``'s next frame with a new stamp and frame_id ``camera``; returns (stamp ns, send time)."""
        index = self._next_frame[camera]
        self._next_frame[camera] = index + 1
        msg = self.frames[camera][index % len(self.frames[camera])]
        self._next_stamp += 1_000_000
        stamp = self._next_stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.header.frame_id = camera
        self.publishers[camera].publish(msg)
        return stamp, time.monotonic()

    def wait_answers(self, stamps: list[int], timeout: float, quiet: float = 2.0) -> None:
        """Wait until every stamp is answered, or ``quiet`` s pass without a new answer, or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.condition:
            last_count, last_change = -1, time.monotonic()
            while True:
                count = sum(stamp in self.answers for stamp in stamps)
                now = time.monotonic()
                if count == len(stamps) or now >= deadline:
                    return
                if count != last_count:
                    last_count, last_change = count, now
                elif now - last_change >= quiet:
                    return
                self.condition.wait(0.1)

    def warm_up(self, timeout: float = 120.0) -> bool:
        """One frame per camera, one camera at a time, until each is answered (discovery, first passes)."""
        for camera in self.cameras:
            stamp, _ = self.publish(camera)
            deadline = time.monotonic() + timeout
            while stamp not in self.answers:
                if time.monotonic() > deadline:
                    return False
                self.wait_answers([stamp], 1.0, quiet=1.0)
                if stamp not in self.answers:
                    stamp, _ = self.publish(camera)
        return True

    def run_rate(self, rate_hz: float, frames: int) -> tuple[RateTrial, dict[str, list[float]]]:
        """Send ``frames`` frames at an aggregate ``rate_hz``, the cameras in turn (each at rate / N).

        Returns:
            the :class:`RateTrial`, and per camera the latencies (ms, send → stats) of its answered frames.
        """
        interval = 1.0 / rate_hz
        sent: list[tuple[str, int, float]] = []
        start = time.monotonic()
        for index in range(frames):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            camera = self.cameras[index % len(self.cameras)]
            sent.append((camera, *self.publish(camera)))
        stamps = [stamp for _, stamp, _ in sent]
        self.wait_answers(stamps, timeout=max(10.0, 5 * interval))
        with self.condition:
            arrivals = {stamp: self.answers[stamp] for stamp in stamps if stamp in self.answers}
        latencies: dict[str, list[float]] = {camera: [] for camera in self.cameras}
        for camera, stamp, send_time in sent:
            if stamp in arrivals:
                latencies[camera].append((arrivals[stamp] - send_time) * 1e3)
        trial = RateTrial(rate_hz=rate_hz, published=len(sent), answered=len(arrivals),
                          input_fps=events_per_second([t for *_, t in sent]),
                          output_fps=events_per_second(sorted(arrivals.values())))
        return trial, latencies

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5.0)


def latency_summary(latencies: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per camera: answered frames, p50 and p90 latency (ms; NaN without answers)."""
    summary = {}
    for camera, values in latencies.items():
        summary[camera] = {"frames": len(values),
                           "p50_ms": float(np.percentile(values, 50)) if values else math.nan,
                           "p90_ms": float(np.percentile(values, 90)) if values else math.nan}
    return summary
