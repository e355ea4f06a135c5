"""Packaging: the ROS-free core imports without rclpy, `pip install .` works
without ROS, and the colcon build installs what it should."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ros_harness

REPO_ROOT = ros_harness.REPO_ROOT
VISION_MSGS_TYPES = {"BoundingBox2D", "Detection2D", "Detection2DArray", "LabelInfo",
                     "ObjectHypothesis", "ObjectHypothesisWithPose", "Point2D", "Pose2D",
                     "VisionClass"}

# Imports every module of mtl_perception outside the ROS parts and reports
# any that pulled in rclpy or ROS message packages.
IMPORT_CORE_SCRIPT = r"""
import importlib, pkgutil, sys
import mtl_perception

ROS_PARTS = ("mtl_perception.ros.", "mtl_perception.graphs.", "mtl_perception.replay.", "mtl_perception.msg.")
ROS_MODULES = ("rclpy", "rosidl_generator_py", "rosidl_runtime_py", "std_msgs",
               "sensor_msgs", "vision_msgs", "builtin_interfaces", "geometry_msgs")

def import_checked(name):
    module = importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ROS_MODULES)
    if loaded:
        sys.exit(f"importing {name} loaded ROS modules: {loaded}")
    return module

def walk(package):
    # Like pkgutil.walk_packages, but never imports the ROS subpackages.
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if ((info.name + ".").startswith(ROS_PARTS) or "__rosidl_" in info.name
                or info.name.endswith(".__main__")):
            continue
        module = import_checked(info.name)
        yield info.name
        if info.ispkg:
            yield from walk(module)

names = ["mtl_perception"]
for name in ("mtl_perception.models", "mtl_perception.image_msg_codec"):
    import_checked(name)
names += list(walk(mtl_perception))
print(mtl_perception.__file__)
print("\n".join(sorted(set(names))))
"""


def python_env(pythonpath):
    """Environment for a child Python with only ``pythonpath`` added to the venv."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in pythonpath)
    return env


@pytest.mark.smoke
def test_core_modules_import_without_ros(tmp_path):
    """Every non-ROS module of the installed package, found by walking it."""
    result = subprocess.run([sys.executable, "-c", IMPORT_CORE_SCRIPT], cwd=tmp_path,
                            env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    imported = result.stdout.split()
    assert "mtl_perception.image_msg_codec" in imported and "mtl_perception.models" in imported
    assert not any(name.startswith(("mtl_perception.ros.", "mtl_perception.graphs.", "mtl_perception.replay."))
               for name in imported[1:])


def copy_source_tree(destination):
    """The working tree as git sees it (tracked and untracked, not ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_pip_install_of_the_core_needs_no_ros(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"
    copy_source_tree(source)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        cwd=tmp_path, env=python_env([]), capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    result = subprocess.run([sys.executable, "-c", IMPORT_CORE_SCRIPT], cwd=tmp_path,
                            env=python_env([target]), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert Path(result.stdout.split()[0]) == target / "mtl_perception" / "__init__.py"

    interfaces = target / "mtl_perception" / "interfaces" / "msg"
    assert {path.stem for path in (interfaces / "vision_msgs").glob("*.msg")} == VISION_MSGS_TYPES
    assert (interfaces / "mtl_perception" / "InferenceStats.msg").read_text() == \
        (REPO_ROOT / "msg" / "InferenceStats.msg").read_text()
    assert not (target / "mtl_perception" / "msg").exists()

    entry_points = next(target.glob("mtl_perception-*.dist-info")) / "entry_points.txt"
    for script in ("mtl-train", "mtl-eval", "mtl-bench", "mtl-export", "make-bag", "bag-info"):
        assert f"{script} = mtl_perception." in entry_points.read_text()


def installed_python_package():
    return ros_harness.install_site_packages("mtl_perception") / "mtl_perception"


@pytest.mark.smoke
def test_colcon_install_layout():
    package = installed_python_package()
    assert '__version__ = "' in (package / "__init__.py").read_text()
    assert (package / "msg" / "__init__.py").exists()
    assert (package / "models" / "__init__.py").exists()
    interfaces = package / "interfaces" / "msg"
    assert {path.stem for path in (interfaces / "vision_msgs").glob("*.msg")} == VISION_MSGS_TYPES
    assert (interfaces / "mtl_perception" / "InferenceStats.msg").exists()
    share = ros_harness.install_prefix("mtl_perception") / "share" / "mtl_perception"
    assert (share / "package.xml").exists()
    for directory in ("launch", "config", "checkpoints"):
        if any((REPO_ROOT / directory).rglob("*.*")):
            assert (share / directory).is_dir(), f"{directory}/ was not installed"


NODE_EXECUTABLES = {"multitask_node", "segmentation_node", "detection_node", "overlay_node"}


def console_scripts():
    """{tool: 'module:function'} of setup.py's console_scripts (the pip install's tools)."""
    text = (REPO_ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([a-z-]+)=([a-z_.]+:[a-z_]+)"', text))


def test_every_bin_file_is_an_installed_executable():
    sources = {path.name for path in (REPO_ROOT / "bin").iterdir() if path.is_file()}
    assert NODE_EXECUTABLES | set(console_scripts()) <= sources
    for name in sorted(sources):
        assert os.access(ros_harness.installed_executable(name), os.X_OK), name


def test_tools_run_the_console_scripts_functions():
    tools = console_scripts()
    assert {"make-bag", "bag-info", "mtl-eval", "mtl-train"} <= set(tools)
    for tool, target in tools.items():
        module, function = target.split(":")
        assert f"from {module} import {function}\n" in (REPO_ROOT / "bin" / tool).read_text(), tool


def test_tools_are_on_path_after_sourcing_ros_env_even_under_set_u(tmp_path):
    tools = sorted(console_scripts())
    script = (f"set -euo pipefail; . {REPO_ROOT}/scripts/ros_env.sh; "
              + "; ".join(f"command -v {tool}" for tool in tools) + "; make-bag --help >/dev/null; bag-info --help >/dev/null")
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = result.stdout.split()
    assert found == [str(ros_harness.install_prefix("mtl_perception") / "bin" / tool) for tool in tools]


def test_generated_messages_import_from_the_install():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    import mtl_perception
    import mtl_perception.msg

    assert Path(mtl_perception.__file__).parent == installed_python_package()
    assert mtl_perception.msg.InferenceStats().frames_dropped == 0


def colcon_packages(*base_paths):
    """{name: build type} of the packages colcon finds crawling ``base_paths``."""
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "colcon"), "--log-base", os.devnull, "list",
         "--base-paths", *map(str, base_paths)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
    return {name: build_type for name, _path, build_type in rows}


def test_colcon_sees_the_twin_only_in_the_dev_workspace():
    assert colcon_packages(REPO_ROOT / ".ws" / "src") == {
        "mtl_perception": "(ros.ament_cmake)", "vision_msgs": "(ros.ament_cmake)"}
    assert colcon_packages(REPO_ROOT) == {"mtl_perception": "(ros.ament_cmake)"}
    assert colcon_packages(REPO_ROOT / "vision_msgs_twin") == {}


def test_twin_refuses_to_build_next_to_a_real_vision_msgs(tmp_path):
    real_prefix = tmp_path / "opt_ros"
    (real_prefix / "share" / "vision_msgs").mkdir(parents=True)
    (real_prefix / "share" / "vision_msgs" / "package.xml").write_text("<package/>")
    env = dict(os.environ, AMENT_PREFIX_PATH=f"{real_prefix}:{sys.prefix}")
    result = subprocess.run(
        ["cmake", "-S", str(REPO_ROOT / "vision_msgs_twin"), "-B", str(tmp_path / "build")],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # CMake wraps long lines
    assert f"A real vision_msgs is installed in '{real_prefix}'" in message


def test_ros_env_script_sets_the_runtime_environment(tmp_path):
    script = (f". {REPO_ROOT}/scripts/ros_env.sh && "
              "python -c 'import os, mtl_perception.msg, vision_msgs.msg; "
              "print(os.environ[\"FASTDDS_BUILTIN_TRANSPORTS\"], "
              "os.environ[\"RMW_IMPLEMENTATION\"], mtl_perception.msg.__file__)'")
    env = {key: value for key, value in os.environ.items()
           if key not in ("FASTDDS_BUILTIN_TRANSPORTS", "RMW_IMPLEMENTATION", "PYTHONPATH",
                          "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    transport, rmw, msg_file = result.stdout.split()
    assert (transport, rmw) == ("LARGE_DATA", "rmw_fastrtps_cpp")
    assert Path(msg_file).is_relative_to(ros_harness.WORKSPACE_INSTALL)

    env["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.split()[0] == "DEFAULT", result.stderr
