"""The measuring harness: rosbag replay through a running graph (accuracy, latency, rates,
peak throughput, memory), the Table II comparison behind ``make demo`` and the multi-camera bench.

May import rclpy, ROS messages, :mod:`mtl_perception.graphs`, :mod:`mtl_perception.ros` and the core.
"""
