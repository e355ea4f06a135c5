"""The rclpy side of a replay: the camera publisher and raw subscriptions on the graph's outputs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mtl_perception.replay.replay_messages import (OUTPUT_TYPES, camera_class, cdr_stamp_ns, deserialize, message_class,
                                                   set_stamp, stamp_ns)

# Stamps the replay invents (warm-up, streams, overlays) start here: far from any recorded stamp.
SYNTHETIC_STAMP_NS = 2_000_000_000 * 1_000_000_000


@dataclass
class Arrival:
    """One output message: receive time (monotonic s), wall time (ns), header stamp (ns), CDR bytes or None."""

    time: float
    wall_ns: int
    stamp: int
    raw: bytes | None


class ReplayNode:
    """One publisher on ``/<namespace>/camera`` (or ``.../compressed``), subscriptions on the outputs.

    Every output's header stamp is read from its CDR bytes (stats are deserialised); its bytes are kept (for the
    output bag and accuracy) only while :attr:`keep_raw` is true. The stats topic's
    ``InferenceStats`` give each node's frame counters. A plain spin thread suffices: the
    callbacks only append under one lock, and the measuring loops wait on its condition.

    Args:
        namespace: the graph's namespace.
        camera_msgtype: the bag's camera type (``sensor_msgs/msg/Image`` or ``.../CompressedImage``).
        topics: relative output topics to subscribe to now (more with :meth:`subscribe`).
    """

    def __init__(self, namespace: str, camera_msgtype: str, topics: list[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        self._rclpy = rclpy
        self.namespace = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtl_replay", context=self.context)
        self.camera_type = camera_class(camera_msgtype)
        compressed = self.camera_type.__name__ == "CompressedImage"
        self.camera_topic = f"/{namespace}/camera" + ("/compressed" if compressed else "")
        self.publisher = self.node.create_publisher(self.camera_type, self.camera_topic, qos_profile_sensor_data)
        self.received: dict[str, list[Arrival]] = {}
        self.first_arrival: dict[str, dict[int, float]] = {}
        self.counters: dict[str, tuple[int, int, int]] = {}  # node → (received, processed, dropped), latest
        self.stats: list = []  # (receive time, InferenceStats)
        self.keep_raw = True
        self.condition = threading.Condition()
        self._next_stamp = SYNTHETIC_STAMP_NS
        self._reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic in topics:
            self.subscribe(topic)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def subscribe(self, topic: str) -> None:
        message_type = message_class(OUTPUT_TYPES[topic])
        self.received[topic] = []
        self.first_arrival[topic] = {}
        self.node.create_subscription(message_type, f"/{self.namespace}/{topic}",
                                      lambda raw, t=topic, m=message_type: self._callback(t, m, raw), self._reliable, raw=True)

    def _callback(self, topic: str, message_type, raw: bytes) -> None:
        now = time.monotonic()
        stamp = cdr_stamp_ns(raw) if topic != "stats" else None  # outputs: the stamp only, not the pixels
        message = deserialize(raw, message_type) if stamp is None else None
        stamp = stamp_ns(message.header.stamp) if stamp is None else stamp
        with self.condition:
            self.received[topic].append(Arrival(now, time.time_ns(), stamp, raw if self.keep_raw else None))
            self.first_arrival[topic].setdefault(stamp, now)
            if topic == "stats":
                self.stats.append((now, message))
                self.counters[message.node_name.rsplit("/", 1)[-1]] = (
                    int(message.frames_received), int(message.frames_processed), int(message.frames_dropped))
            self.condition.notify_all()

    def new_stamp(self) -> int:
        """A stamp no recorded frame has (1 ms apart, unique in this replay)."""
        self._next_stamp += 1_000_000
        return self._next_stamp

    def publish_raw(self, rawdata: bytes) -> float:
        """Publish recorded CDR bytes (stamp as recorded); returns the monotonic send time (taken
        before the publish call: the transport's whole cost counts as the graph's)."""
        sent = time.monotonic()
        self.publisher.publish(rawdata)
        return sent

    def publish_restamped(self, message, stamp: int) -> float:
        """Publish a camera message with its header stamp set to ``stamp`` ns; returns the send time."""
        message = set_stamp(message, stamp)
        sent = time.monotonic()
        self.publisher.publish(message)
        return sent

    def parameter_values(self, node: str, names: list[str], timeout: float = 10.0) -> dict[str, object]:
        """Values of ``names`` in the running ``/<namespace>/<node>`` (parameter service); unset ones are None."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, f"/{self.namespace}/{node}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise RuntimeError(f"/{self.namespace}/{node} offers no get_parameters service")
            future = client.call_async(GetParameters.Request(names=list(names)))
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise RuntimeError(f"/{self.namespace}/{node} did not answer get_parameters within {timeout} s")
            values = [parameter_value_to_python(v) for v in future.result().values]
            return {name: (None if v == [] and name == "class_allowlist" else v) for name, v in zip(names, values)}
        finally:
            self.node.destroy_client(client)

    def camera_message(self, rawdata: bytes):
        return deserialize(rawdata, self.camera_type)

    def answered(self, stamp: int, topics) -> bool:
        return all(stamp in self.first_arrival[t] for t in topics)

    def wait_answered(self, stamp: int, topics, timeout: float, alive) -> bool:
        """Wait until ``stamp`` has arrived on every topic; ``alive()`` raises if the graph died."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while not self.answered(stamp, topics):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(min(remaining, 0.5))
                alive()
        return True

    def counter_snapshot(self) -> dict[str, tuple[int, int, int]]:
        with self.condition:
            return dict(self.counters)

    def last_arrival(self) -> float:
        """Monotonic time of the latest output on any topic (0 if none)."""
        with self.condition:
            return max((items[-1].time for items in self.received.values() if items), default=0.0)

    def record(self, path: Path) -> Path:
        """Write every output whose bytes were kept into a rosbag2 at ``path`` (receive wall times)."""
        from mtl_perception.bags.writer import BagWriter

        with BagWriter(path, force=True) as writer:
            for topic, arrivals in self.received.items():
                for arrival in arrivals:
                    if arrival.raw is not None:
                        writer.write(f"/{self.namespace}/{topic}", OUTPUT_TYPES[topic], arrival.wall_ns, arrival.raw)
        return path

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5.0)
