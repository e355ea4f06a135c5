"""Launch files (when `launch` is importable), the rviz config, and the graph definition they share."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtl_perception.ros.graph import GRAPHS, node_overrides, write_overrides_file

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
    from mtl_perception.ros.graph import DEFAULT_CAMERA_TOPIC

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


@pytest.mark.needs_launch
@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_files_describe_the_graph_nodes(graph):
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{graph}_launch", REPO / "launch" / f"{graph}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    arguments = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"camera_topic", "device", "params_file", "namespace", "use_lifecycle", "use_rviz"} <= arguments
    context = LaunchContext()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.visit(context)
    [opaque] = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    nodes = [n for n in opaque.execute(context) if isinstance(n, Node)]
    assert [n.node_executable for n in nodes] == [s.executable for s in GRAPHS[graph]]
