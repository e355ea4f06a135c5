"""Moved to :mod:`mtl_perception.replay.compare`: ``python -m mtl_perception.ros.compare`` says so and exits 2."""

from mtl_perception.module_moved import module_moved

module_moved("mtl_perception.ros.compare", "mtl_perception.replay.compare", __name__)
