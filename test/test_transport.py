"""Camera-sized frames cross processes intact with best-effort QoS in the test environment.

Guards the transport setup (config/fastdds_localhost.xml): with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST instead, a best-effort subscriber got 1-2 of 40
640x480 frames here.
"""

from __future__ import annotations

import sys
import time

import pytest

PUBLISHER = """
import sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("frame_publisher")
publisher = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
height, width, count = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + 30
while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=bytes(height * width * 3))
for i in range(count):
    image.header.stamp.sec = i
    publisher.publish(image)
    time.sleep(0.05)
time.sleep(1.0)
"""


@pytest.mark.parametrize("height,width", [(480, 640), (1080, 1920)])
def test_best_effort_camera_frames_arrive(ros_node, launch_process, unique_topic, height, width):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    collector = ros_node.collect(unique_topic, Image, qos_profile_sensor_data)
    try:
        process = launch_process([sys.executable, "-c", PUBLISHER, unique_topic, str(height), str(width), "40"])
        assert process.wait(timeout=90) == 0, process.output()
        time.sleep(0.5)
        stamps = {m.header.stamp.sec for m in collector.messages}
        assert len(stamps) >= 38, f"{len(stamps)} of 40 {width}x{height} frames arrived"
        assert collector.messages[0].width == width
    finally:
        collector.close()


ANNOUNCER = """
import sys, time
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("announcer_" + sys.argv[2])
publisher = node.create_publisher(String, sys.argv[1], 10)
expected, deadline = int(sys.argv[3]), time.monotonic() + 60
while node.count_publishers(sys.argv[1]) < expected and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.2)
seen = node.count_publishers(sys.argv[1])
print("sees", seen, flush=True)
deadline = time.monotonic() + 5  # stay visible while the others finish
while time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.2)
sys.exit(0 if seen == expected else 1)
"""


def test_many_processes_discover_each_other(launch_process, unique_topic):
    """Fast DDS announces to 4 participants' ports by default: without the profile's wider range,
    the 5th and later processes on the host saw nobody (measured). Every one of 8 must see all 8."""
    processes = [launch_process([sys.executable, "-c", ANNOUNCER, unique_topic, str(i), "8"], name=f"announcer{i}")
                 for i in range(8)]
    codes = [p.wait(timeout=90) for p in processes]
    assert codes == [0] * 8, [p.output().strip() for p in processes]
