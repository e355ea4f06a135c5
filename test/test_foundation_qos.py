"""QoS by name, and the latched profile's late-joiner behaviour over real DDS."""

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from mtl_perception.ros.qos import LATCHED_QOS, qos_from_name  # noqa: E402


def test_qos_from_name():
    best_effort = qos_from_name("best_effort", 3)
    assert (best_effort.reliability, best_effort.depth) == (ReliabilityPolicy.BEST_EFFORT, 3)
    reliable = qos_from_name("reliable", 1)
    assert (reliable.reliability, reliable.durability) == \
        (ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)


@pytest.mark.parametrize("name, depth, message", [
    ("sensor_data", 5, "unknown QoS reliability 'sensor_data'"),
    (2, 5, "unknown QoS reliability 2"),
    ("reliable", 0, "positive integer, got 0"),
    ("reliable", True, "positive integer, got True"),
])
def test_qos_from_name_rejects_bad_values(name, depth, message):
    with pytest.raises(ValueError, match=message):
        qos_from_name(name, depth)


def test_latched_message_reaches_a_subscriber_that_joins_later(ros_node, launch_process,
                                                               unique_topic):
    import json
    import sys

    from std_msgs.msg import String

    # Publish exactly once from another process, then subscribe afterwards.
    launch_process([sys.executable, "-c", LATCHED_PUBLISHER, unique_topic], name="latched")
    ros_node.wait_for_publisher(unique_topic, timeout=20.0)
    [msg] = ros_node.wait_for_messages(unique_topic, String, count=1, timeout=20.0,
                                       qos=LATCHED_QOS)
    assert json.loads(msg.data) == {"labels": ["car", "person"]}


LATCHED_PUBLISHER = """
import json, sys, time
import rclpy
from std_msgs.msg import String
from mtl_perception.ros.qos import LATCHED_QOS

rclpy.init()
node = rclpy.create_node("latched_publisher")
publisher = node.create_publisher(String, sys.argv[1], LATCHED_QOS)
publisher.publish(String(data=json.dumps({"labels": ["car", "person"]})))
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
"""
