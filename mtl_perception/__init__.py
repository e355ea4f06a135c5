"""Multitask segmentation + detection for drones (Martí & Maki, 2017).

Everything in this package except :mod:`mtl_perception.ros` is plain PyTorch and
numpy, so it installs and runs on a training box without ROS.
"""

__version__ = "0.1.0"
