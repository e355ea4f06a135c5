"""Launch descriptions built from :data:`mtl_perception.graphs.graph.GRAPHS` (used by launch/*.launch.py).

The launch files stay thin: the YAML carries the parameters, ``GRAPHS`` the nodes, and
the arguments only override what they name. The compute budget (``budget``,
``graph_cpus``, ``cpu_threads``; :mod:`mtl_perception.graphs.budget`) pins every node with
a ``taskset -c`` prefix and sets the inference nodes' torch threads.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.event_handlers import OnShutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from mtl_perception.bags.topics import DEFAULT_CAMERA_TOPIC
from mtl_perception.engines.backends import BACKENDS, PRECISIONS
from mtl_perception.graphs.budget import BUDGETS, DEFAULT_BUDGET, format_cpu_list, plan_budget
from mtl_perception.graphs.graph import GRAPHS, PACKAGE, node_overrides, write_overrides_file
from mtl_perception.ros.paths import package_share_dir

_CHECKPOINT_ARGUMENTS = {
    "multitask": (("checkpoint", "multitask checkpoint; empty = the YAML's"),),
    "naive": (("segmentation_checkpoint", "segmentation checkpoint; empty = the YAML's"),
              ("detection_checkpoint", "detection checkpoint; empty = the YAML's")),
    "multitask_multicam": (("checkpoint", "multitask checkpoint; empty = the YAML's"),
                           ("cameras", "comma-separated camera namespaces, e.g. front,down; empty = the YAML's")),
}


def _share(*parts: str) -> str:
    share = package_share_dir()
    return os.path.join(str(share), *parts) if share else os.path.join(*parts)


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _boolean(name: str, value: str) -> bool:
    """A launch argument read as a boolean (else ValueError naming it)."""
    try:
        return _BOOLEANS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"launch argument {name} must be true or false, got {value!r}") from None


def _positive_int(name: str, value: str) -> int | None:
    """A launch argument read as a count >= 1; empty = None (else ValueError naming it)."""
    if not value:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"launch argument {name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _per_camera_inputs(graph: str) -> bool:
    """The graph's node reads one input per camera of ``cameras`` (multitask_multicam), not ``image``."""
    return "cameras" in dict(_CHECKPOINT_ARGUMENTS[graph])


def _remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _graph_nodes(context, graph: str):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    budget = plan_budget(get("budget"), get("device") or None, get("graph_cpus") or None,
                         _positive_int("cpu_threads", get("cpu_threads")))
    arguments = {name: get(name) for name, _ in _CHECKPOINT_ARGUMENTS[graph]}
    arguments.update(budget.node_arguments())
    arguments.update({name: get(name) for name in ("input_transport", "reliability", "backend", "precision",
                                                     "calibration")})
    use_lifecycle = _boolean("use_lifecycle", get("use_lifecycle"))
    arguments["use_lifecycle"] = use_lifecycle
    overrides = node_overrides(graph, arguments)
    # Not a parameters dict: launch_ros writes those under /**, which loses to the YAML's /**/<node>
    # entries. The file's folder goes when launch shuts down (SIGINT/SIGTERM or the last node
    # exiting), atexit covering any other exit.
    actions = []
    overrides_file = None
    if any(overrides.values()):
        scratch = tempfile.mkdtemp(prefix="mtl_launch_")
        atexit.register(_remove, scratch)
        actions.append(RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context, d=scratch: _remove(d))))
        overrides_file = str(write_overrides_file(overrides, scratch))
    prefix = f"taskset -c {format_cpu_list(budget.graph_cpus)}" if budget.graph_cpus else None
    actions.append(LogInfo(msg=f"[{graph}] budget: {budget.describe()}"))
    namespace = get("namespace")
    camera_topic = get("camera_topic")
    if camera_topic and _per_camera_inputs(graph):
        raise ValueError(f"{graph} takes cameras:=<names> (inputs <namespace>/<camera>/image), not camera_topic")
    for spec in GRAPHS[graph]:
        node_class = LifecycleNode if use_lifecycle else Node  # every node is a lifecycle node
        actions.append(node_class(
            package=PACKAGE, executable=spec.executable, name=spec.executable, namespace=namespace,
            exec_name=spec.executable,  # the log label; with the taskset prefix it would read "taskset-N"
            parameters=[get("params_file")] + ([overrides_file] if overrides_file else []),
            remappings=[("image", camera_topic)] if camera_topic else [], output="screen", prefix=prefix,
            additional_env=budget.environment({})))
    return actions


def graph_launch_description(graph: str) -> LaunchDescription:
    """Arguments: camera_topic, checkpoint(s), device, backend, precision, calibration, params_file, namespace, use_lifecycle, use_rviz,
    input_transport, reliability, budget, graph_cpus, cpu_threads."""
    declared = [
        DeclareLaunchArgument("camera_topic", default_value="" if _per_camera_inputs(graph) else DEFAULT_CAMERA_TOPIC,
                              description="not used: each camera's input is <namespace>/<camera>/image"
                              if _per_camera_inputs(graph) else "sensor_msgs/Image input"),
        *(DeclareLaunchArgument(name, default_value="", description=text) for name, text in _CHECKPOINT_ARGUMENTS[graph]),
        DeclareLaunchArgument("device", default_value="", description="auto | cuda | cuda:N | cpu; empty = the YAML's"),
        DeclareLaunchArgument("backend", default_value="", choices=["", *BACKENDS],
                              description="inference engine: auto (onnxruntime on the CPU) | torch | onnxruntime; "
                                          "empty = the YAML's"),
        DeclareLaunchArgument("precision", default_value="", choices=["", *PRECISIONS],
                              description="fp32 | fp16 | bf16 (torch) | int8 (onnxruntime on the CPU); empty = the YAML's"),
        DeclareLaunchArgument("calibration", default_value="",
                              description="precision int8 from a .pt checkpoint: rosbag or image folder to calibrate on; "
                                          "empty = the YAML's"),
        DeclareLaunchArgument("params_file", default_value=_share("config", "mtl_perception.yaml"),
                              description="parameter YAML shared with the project CLI"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node and topic"),
        DeclareLaunchArgument("use_lifecycle", default_value="false",
                              description="start managed lifecycle nodes (configure/activate them yourself)"),
        DeclareLaunchArgument("input_transport", default_value="", description="raw | compressed; empty = the YAML's"),
        DeclareLaunchArgument("reliability", default_value="", description="best_effort | reliable; empty = the YAML's"),
        DeclareLaunchArgument("budget", default_value=DEFAULT_BUDGET, choices=list(BUDGETS),
                              description="shared: every node on one CPU set (taskset) with the same torch threads; "
                                          "per-network: no pinning, the YAML's threads"),
        DeclareLaunchArgument("graph_cpus", default_value="",
                              description="shared budget: CPU list of the graph, e.g. 1 or 2-3; empty = all CPUs but the first"),
        DeclareLaunchArgument("cpu_threads", default_value="",
                              description="torch threads per inference node; empty = one per graph CPU (shared), the YAML's (per-network)"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start rviz2 with config/mtl_perception.rviz"),
    ]
    return LaunchDescription([
        *declared,
        # Fast DDS' default transport loses most large best-effort camera frames (docs/dds.md).
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        OpaqueFunction(function=_graph_nodes, args=[graph]),
        Node(package="rviz2", executable="rviz2", arguments=["-d", _share("config", "mtl_perception.rviz")],
             condition=IfCondition(LaunchConfiguration("use_rviz")), output="screen"),
    ])
