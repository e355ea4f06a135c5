"""Starting the node graphs (multitask, naive, multitask_multicam) under a compute budget: the
graph definitions and their CLI, the launch-file support and the CPU/GPU budget.

Imports the ROS-free core and :mod:`mtl_perception.ros` (package paths), and ``launch``/
``launch_ros`` in ``launch_support`` only; no rclpy, no ROS messages, never :mod:`mtl_perception.replay`.
"""
