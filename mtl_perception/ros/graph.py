"""Moved to :mod:`mtl_perception.graphs.graph`: ``python -m mtl_perception.ros.graph`` says so and exits 2."""

from mtl_perception.module_moved import module_moved

module_moved("mtl_perception.ros.graph", "mtl_perception.graphs.graph", __name__)
