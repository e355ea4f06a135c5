"""ros2 launch mtl_perception multitask_multicam.launch.py [cameras:=front,down] [namespace:=...] [budget:=shared] ...

One multicam_node serving every camera (inputs <namespace>/<camera>/image, outputs under
<namespace>/<camera>/) with one network and one batched pass per tick. Nodes come from
mtl_perception.graphs.graph.GRAPHS["multitask_multicam"], parameters from config/mtl_perception.yaml
(the same YAML as `python -m mtl_perception.graphs.graph multitask_multicam`).
"""

from mtl_perception.graphs.launch_support import graph_launch_description


def generate_launch_description():
    return graph_launch_description("multitask_multicam")
