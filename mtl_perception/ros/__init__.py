"""The node runtime a launch file starts: the lifecycle node base, the inference and overlay
nodes, QoS, diagnostics and message building.

May import rclpy, ROS messages and the ROS-free core; never :mod:`mtl_perception.graphs` or
:mod:`mtl_perception.replay`. (``graph``, ``replay_eval``, ``compare``, ``demo`` and
``multicam_bench`` here are stubs of moved tools: they name the new path and exit 2.)
"""
