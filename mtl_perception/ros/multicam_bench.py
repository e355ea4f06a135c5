"""Moved to :mod:`mtl_perception.replay.multicam_bench`: ``python -m mtl_perception.ros.multicam_bench`` says so and exits 2."""

from mtl_perception.module_moved import module_moved

module_moved("mtl_perception.ros.multicam_bench", "mtl_perception.replay.multicam_bench", __name__)
