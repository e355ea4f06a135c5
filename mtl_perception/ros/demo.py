"""Moved to :mod:`mtl_perception.replay.demo`: ``python -m mtl_perception.ros.demo`` says so and exits 2."""

from mtl_perception.module_moved import module_moved

module_moved("mtl_perception.ros.demo", "mtl_perception.replay.demo", __name__)
