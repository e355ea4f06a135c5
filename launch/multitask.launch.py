"""ros2 launch mtl_perception multitask.launch.py [camera_topic:=...] [use_rviz:=true] [budget:=shared|per-network] ...

Nodes come from mtl_perception.graphs.graph.GRAPHS["multitask"], parameters from
config/mtl_perception.yaml (the same YAML as `python -m mtl_perception.graphs.graph multitask`).
"""

from mtl_perception.graphs.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("multitask")
