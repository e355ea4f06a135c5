"""Launch files (when `launch` is importable), the rviz config, and the graph definition they share."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mtl_perception.graphs.graph import GRAPHS, node_overrides, write_overrides_file

REPO = Path(__file__).resolve().parents[1]
# Topics each graph publishes under its namespace (relative names), and the camera input.
GRAPH_TOPICS = {"segmentation", "segmentation/color", "detections", "label_info", "overlay", "stats"}
RVIZ_DISPLAY_CLASSES = {"rviz_default_plugins/Image", "rviz_default_plugins/Camera"}


def test_rviz_config_names_only_topics_and_displays_that_exist():
    config = yaml.safe_load((REPO / "config" / "mtl_perception.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert len(displays) == 3
    topics = set()
    for display in displays:
        assert display["Class"] in RVIZ_DISPLAY_CLASSES, display["Class"]
        topics.add(display["Topic"]["Value"])
    from mtl_perception.graphs.graph import DEFAULT_CAMERA_TOPIC

    published = {"/" + t for t in GRAPH_TOPICS}
    assert topics == {DEFAULT_CAMERA_TOPIC, "/segmentation/color", "/overlay"}
    assert topics - {DEFAULT_CAMERA_TOPIC} <= published


def test_yaml_configures_every_node_of_both_graphs():
    params = yaml.safe_load((REPO / "config" / "mtl_perception.yaml").read_text())
    for graph, specs in GRAPHS.items():
        for spec in (s for s in specs if s.inference):  # overlay_node runs no network
            section = params[f"/**/{spec.executable}"]["ros__parameters"]
            checkpoints = [v for k, v in section.items() if k.endswith("checkpoint")]
            assert checkpoints, f"{graph}: {spec.executable} has no checkpoint"
            for value in checkpoints:
                assert (REPO / value).is_file() or value.startswith("/"), value


def test_overrides_are_written_under_node_specific_keys(tmp_path):
    overrides = node_overrides("naive", {"segmentation_checkpoint": "/x/seg.pt", "device": "cpu", "use_lifecycle": True})
    assert overrides["segmentation_node"] == {"checkpoint": "/x/seg.pt", "device": "cpu", "managed": True}
    assert overrides["overlay_node"] == {"managed": True}
    assert overrides["detection_node"] == {"device": "cpu", "managed": True}
    written = yaml.safe_load(write_overrides_file(overrides, tmp_path).read_text())
    assert written["/**/segmentation_node"]["ros__parameters"]["checkpoint"] == "/x/seg.pt"
    with pytest.raises(ValueError, match="unknown graph"):
        node_overrides("triple", {})


# Runs a launch file as `ros2 launch` does (ros2cli is not on PyPI): argv = file, name:=value...
LAUNCH_RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService(argv=sys.argv[2:])
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=[a.split(":=", 1) for a in sys.argv[2:]])]))
sys.exit(service.run())
"""


def _cpus(text: str) -> set[int]:
    """``"0,2-3"`` -> {0, 2, 3} (Cpus_allowed_list / taskset syntax)."""
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _graph_actions(graph: str, **arguments: str):
    """The actions the launch file's OpaqueFunction returns for ``arguments`` (the rest at their defaults)."""
    import importlib.util

    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    spec = importlib.util.spec_from_file_location(f"{graph}_launch", REPO / "launch" / f"{graph}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(arguments)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {"camera_topic", "device", "params_file", "namespace", "use_lifecycle", "use_rviz", "budget", "graph_cpus",
            "cpu_threads"} <= {a.name for a in declared}
    for entity in declared:
        entity.visit(context)  # defaults for the arguments not given; checks choices
    [opaque] = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    return context, opaque.execute(context)


@pytest.mark.needs_launch
@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_files_describe_the_graph_nodes_within_the_budget(graph):
    import os

    from launch.utilities import perform_substitutions
    from launch_ros.actions import LifecycleNode, Node

    def nodes(**arguments):
        context, actions = _graph_actions(graph, **arguments)
        found = [a for a in actions if isinstance(a, Node)]
        assert [n.node_executable for n in found] == [s.executable for s in GRAPHS[graph]]
        # Process log labels are the node names ("[detection_node-2] ..."), not the prefix's "taskset-N".
        labels = [n.process_description.name and perform_substitutions(context, n.process_description.name) for n in found]
        assert labels == [s.executable for s in GRAPHS[graph]]
        return [(n, perform_substitutions(context, n.process_description.prefix)) for n in found]

    allowed = sorted(os.sched_getaffinity(0))
    # Default budget: shared, every node on all allowed CPUs but the first (the replay's).
    for node, prefix in nodes():
        assert prefix.split()[:2] == ["taskset", "-c"] and _cpus(prefix.split()[2]) == set(allowed[1:] or allowed)
        assert not isinstance(node, LifecycleNode)
    for node, prefix in nodes(graph_cpus=str(allowed[-1])):
        assert prefix == f"taskset -c {allowed[-1]}"
    for node, prefix in nodes(budget="per-network"):
        assert prefix == ""
    for node, _ in nodes(use_lifecycle="true"):  # every node, overlay_node too, waits for a manager
        assert isinstance(node, LifecycleNode)


@pytest.mark.needs_launch
@pytest.mark.parametrize("graph, arguments, message", [
    ("multitask", {"cpu_threads": "two"}, "cpu_threads must be a whole number"),
    ("multitask", {"cpu_threads": "0"}, "cpu_threads must be a whole number"),
    ("naive", {"use_lifecycle": "maybe"}, "use_lifecycle must be true or false"),
    ("multitask", {"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ("naive", {"graph_cpus": "4096"}, "not available to this process"),
    # multicam_node has one input per camera: a single camera_topic would be silently ignored.
    ("multitask_multicam", {"camera_topic": "/camera/image_raw"}, "takes cameras:=<names>.*not camera_topic"),
])
def test_bad_launch_arguments_fail_with_a_message_naming_them(graph, arguments, message):
    with pytest.raises(ValueError, match=message):
        _graph_actions(graph, **arguments)


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return children


def _proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)}


def _launch(launch_process, graph: str, *arguments: str):
    """Start ``ros2 launch mtl_perception <graph>.launch.py arguments...`` from the installed share dir."""
    import sys

    from mtl_perception.ros.paths import package_share_dir

    launch_file = package_share_dir() / "launch" / f"{graph}.launch.py"
    return launch_process([sys.executable, "-c", LAUNCH_RUNNER, str(launch_file), *arguments], name=f"launch_{graph}")


def _wait_for_children(process, count: int, timeout: float = 30.0) -> list[int]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _child_pids(process.popen.pid)
        if len(children) >= count or process.returncode is not None:
            return children
        time.sleep(0.1)
    return _child_pids(process.popen.pid)


@pytest.mark.needs_launch
def test_launched_graph_is_pinned_takes_the_arguments_answers_and_cleans_up(ros_node, launch_process, tmp_path):
    """multitask.launch.py under the real LaunchService: node on the graph CPU, overrides in its
    parameters, outputs carry the input header, Ctrl-C stops it and removes the overrides file."""
    import os

    from rcl_interfaces.srv import GetParameters
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from node_fixtures import call_service, image_msg, make_tiny_checkpoints, sample_image, sensor_publisher, wait_for_stamp

    checkpoint = make_tiny_checkpoints(tmp_path)["multitask"]
    cpu = sorted(os.sched_getaffinity(0))[-1]
    graph = _launch(launch_process, "multitask", f"checkpoint:={checkpoint}", "device:=cpu", "namespace:=lt",
                    "camera_topic:=/lt/cam", f"graph_cpus:={cpu}", "cpu_threads:=2")
    ros_node.wait_for_subscriber("/lt/cam", timeout=60)
    [pid] = _wait_for_children(graph, 1)
    command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    assert Path(command[1]).name == "multitask_node"
    assert re.search(rf"\[multitask_node-\d+\]: process started with pid \[{pid}\]", graph.output())  # not taskset-N
    assert _proc_status(pid)["Cpus_allowed_list"] == str(cpu)
    [overrides] = [command[i + 1] for i, part in enumerate(command)
                   if part == "--params-file" and "mtl_launch_" in command[i + 1]]
    assert Path(overrides).is_file()
    values = {}
    for name in ("cpu_threads", "device", "checkpoint", "managed"):
        [value] = call_service(ros_node.node, GetParameters, "/lt/multitask_node/get_parameters",
                               GetParameters.Request(names=[name])).values
        values[name] = value.integer_value or value.string_value or value.bool_value
    assert values == {"cpu_threads": 2, "device": "cpu", "checkpoint": str(checkpoint), "managed": False}
    collectors = {"segmentation": ros_node.collect("/lt/segmentation", Image),
                  "detections": ros_node.collect("/lt/detections", Detection2DArray)}
    publisher = sensor_publisher(ros_node.node, "/lt/cam")
    try:
        image = sample_image(60, 80, 3)
        outputs = wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 701, "lt_optical")), 701, timeout=60)
    finally:
        for collector in collectors.values():
            collector.close()
        ros_node.node.destroy_publisher(publisher)
    for msg in outputs.values():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (701, 123456, "lt_optical")
    assert (outputs["segmentation"].height, outputs["segmentation"].width) == (60, 80)
    assert graph.stop() == 0
    assert not Path(f"/proc/{pid}").exists()
    assert not Path(overrides).parent.exists()


@pytest.mark.needs_launch
def test_launched_lifecycle_graph_publishes_nothing_until_every_node_is_activated(ros_node, launch_process, tmp_path):
    """naive.launch.py use_lifecycle:=true: all three nodes (overlay_node too) wait unconfigured, stay silent
    while unconfigured and inactive, and answer once activated."""
    import time

    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from node_fixtures import (change_state, get_state, image_msg, make_tiny_checkpoints, sample_image, sensor_publisher,
                               wait_for_stamp)

    checkpoints = make_tiny_checkpoints(tmp_path)
    graph = _launch(launch_process, "naive", "use_lifecycle:=true", "device:=cpu", "namespace:=llc",
                    "camera_topic:=/llc/cam", f"segmentation_checkpoint:={checkpoints['segmentation']}",
                    f"detection_checkpoint:={checkpoints['detection']}")
    targets = [f"/llc/{spec.executable}" for spec in GRAPHS["naive"]]
    assert [get_state(ros_node.node, target) for target in targets] == ["unconfigured"] * 3
    collectors = {"segmentation": ros_node.collect("/llc/segmentation", Image),
                  "detections": ros_node.collect("/llc/detections", Detection2DArray),
                  "overlay": ros_node.collect("/llc/overlay", Image)}
    publisher = sensor_publisher(ros_node.node, "/llc/cam")
    image = sample_image(40, 48, 5)
    try:
        for transition, state in ((None, "unconfigured"), (Transition.TRANSITION_CONFIGURE, "inactive")):
            if transition is not None:
                assert all(change_state(ros_node.node, target, transition) for target in targets)
            assert [get_state(ros_node.node, target) for target in targets] == [state] * 3
            for _ in range(10):
                publisher.publish(image_msg(image, 800))
                time.sleep(0.2)
            assert {name: len(c.messages) for name, c in collectors.items()} == dict.fromkeys(collectors, 0), state
        assert all(change_state(ros_node.node, target, Transition.TRANSITION_ACTIVATE) for target in targets)
        wait_for_stamp(collectors, lambda: publisher.publish(image_msg(image, 801)), 801, timeout=60)
    finally:
        for collector in collectors.values():
            collector.close()
        ros_node.node.destroy_publisher(publisher)
    assert graph.stop() == 0
