"""Moved to :mod:`mtl_perception.replay.replay_eval`: ``python -m mtl_perception.ros.replay_eval`` says so and exits 2."""

from mtl_perception.module_moved import module_moved

module_moved("mtl_perception.ros.replay_eval", "mtl_perception.replay.replay_eval", __name__)
