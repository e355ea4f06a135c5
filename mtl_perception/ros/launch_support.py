"""Launch descriptions built from :data:`mtl_perception.ros.graph.GRAPHS` (used by launch/*.launch.py).

The launch files stay thin: the YAML carries the parameters, ``GRAPHS`` the nodes, and
the arguments only override what they name.
"""

from __future__ import annotations

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from mtl_perception.ros.graph import DEFAULT_CAMERA_TOPIC, GRAPHS, PACKAGE, node_overrides, write_overrides_file
from mtl_perception.ros.paths import package_share_dir

_CHECKPOINT_ARGUMENTS = {
    "multitask": (("checkpoint", "multitask checkpoint; empty = the YAML's"),),
    "naive": (("segmentation_checkpoint", "segmentation checkpoint; empty = the YAML's"),
              ("detection_checkpoint", "detection checkpoint; empty = the YAML's")),
}


def _share(*parts: str) -> str:
    share = package_share_dir()
    return os.path.join(str(share), *parts) if share else os.path.join(*parts)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _graph_nodes(context, graph: str):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    arguments = {name: get(name) for name, _ in _CHECKPOINT_ARGUMENTS[graph]}
    arguments["device"] = get("device")
    use_lifecycle = _truthy(get("use_lifecycle"))
    arguments["use_lifecycle"] = use_lifecycle
    overrides = node_overrides(graph, arguments)
    # Not a parameters dict: launch_ros writes those under /**, which loses to the YAML's /**/<node> entries.
    overrides_file = str(write_overrides_file(overrides)) if any(overrides.values()) else None
    namespace = get("namespace")
    actions = []
    for spec in GRAPHS[graph]:
        node_class = LifecycleNode if (use_lifecycle and spec.inference) else Node
        actions.append(node_class(
            package=PACKAGE, executable=spec.executable, name=spec.executable, namespace=namespace,
            parameters=[get("params_file")] + ([overrides_file] if overrides_file else []),
            remappings=[("image", get("camera_topic"))], output="screen"))
    return actions


def graph_launch_description(graph: str) -> LaunchDescription:
    """Arguments: camera_topic, checkpoint(s), device, params_file, namespace, use_lifecycle, use_rviz."""
    declared = [
        DeclareLaunchArgument("camera_topic", default_value=DEFAULT_CAMERA_TOPIC, description="sensor_msgs/Image input"),
        *(DeclareLaunchArgument(name, default_value="", description=text) for name, text in _CHECKPOINT_ARGUMENTS[graph]),
        DeclareLaunchArgument("device", default_value="", description="auto | cuda | cpu; empty = the YAML's"),
        DeclareLaunchArgument("params_file", default_value=_share("config", "mtl_perception.yaml"),
                              description="parameter YAML shared with the project CLI"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node and topic"),
        DeclareLaunchArgument("use_lifecycle", default_value="false",
                              description="start managed lifecycle nodes (configure/activate them yourself)"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start rviz2 with config/mtl_perception.rviz"),
    ]
    return LaunchDescription([
        *declared,
        # Fast DDS' default transport loses most large best-effort camera frames (README).
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        OpaqueFunction(function=_graph_nodes, args=[graph]),
        Node(package="rviz2", executable="rviz2", arguments=["-d", _share("config", "mtl_perception.rviz")],
             condition=IfCondition(LaunchConfiguration("use_rviz")), output="screen"),
    ])
