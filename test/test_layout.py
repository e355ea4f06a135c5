"""The package layout: which folders may import ROS, and imports that run downward only.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import
cannot slip past the way it would past an import-time check.
"""

import ast
import subprocess
import sys

import pytest
import ros_harness

PACKAGE_DIR = ros_harness.REPO_ROOT / "mtl_perception"
# Top-level modules of ROS: rclpy and the message packages (ament_index_python and launch apart).
ROS_MESSAGE_MODULES = {"rclpy", "rosidl_runtime_py", "rosidl_generator_py", "std_msgs", "sensor_msgs", "vision_msgs",
                       "diagnostic_msgs", "builtin_interfaces", "geometry_msgs", "rcl_interfaces", "lifecycle_msgs"}
ROS_FOLDERS = ("ros", "replay")  # the folders that may import rclpy and messages
LAUNCH_MODULES = {"launch", "launch_ros"}
MOVED_STUBS = {"graph": "graphs.graph", "replay_eval": "replay.replay_eval", "compare": "replay.compare",
               "demo": "replay.demo", "multicam_bench": "replay.multicam_bench"}


def module_imports(path):
    """Absolute names of every module imported by the file at ``path`` (relative imports resolved)."""
    package = list(path.relative_to(PACKAGE_DIR.parent).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def folder_of(path):
    """The first folder under mtl_perception/ ('' for a top-level module)."""
    parts = path.relative_to(PACKAGE_DIR).parts
    return parts[0] if len(parts) > 1 else ""


def package_files():
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_module_imports_resolves_relative_imports(tmp_path):
    """The checker itself, on a file whose imports are known."""
    target = PACKAGE_DIR / "training" / "data.py"
    found = module_imports(target)
    assert "mtl_perception.data.dataset_classes.dataset_class_names" in found
    assert "mtl_perception.training.config.ConfigError" in found
    assert "torch" in found


def test_only_the_ros_folders_import_rclpy_or_messages():
    offenders = {}
    for path in package_files():
        if folder_of(path) in ROS_FOLDERS:
            continue
        ros = sorted(name for name in module_imports(path) if name.split(".")[0] in ROS_MESSAGE_MODULES)
        if ros:
            offenders[str(path.relative_to(PACKAGE_DIR))] = ros
    assert offenders == {}


def test_launch_is_imported_by_launch_support_only():
    users = sorted(str(p.relative_to(PACKAGE_DIR)) for p in package_files()
                   if any(n.split(".")[0] in LAUNCH_MODULES for n in module_imports(p)))
    assert users == ["graphs/launch_support.py"]


# Each folder may import only folders of a lower rank (and the top-level modules): data and
# models at the bottom, the harness at the top. A top-level module (predictor, bench, ...) may
# import any core folder up to evaluation, never training or the ROS folders.
RANKS = {"data": 0, "models": 0, "metrics": 1, "bags": 1, "evaluation": 2, "engines": 2, "training": 3,
         "ros": 4, "graphs": 5, "replay": 6}
TOP_LEVEL_RANK = 2


def test_every_folder_has_a_rank():
    assert {p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")} == set(RANKS)


def test_imports_run_downward():
    """core <- ros (runtime) <- graphs <- replay; in the core, evaluation never imports training
    and data imports no other folder. So the runtime never imports graph starting or the harness."""
    offenders = {}
    for path in package_files():
        folder = folder_of(path)
        if folder == "ros" and path.stem in MOVED_STUBS:
            continue
        rank = RANKS[folder] if folder else TOP_LEVEL_RANK
        banned = [f"mtl_perception.{name}" for name, other in RANKS.items()
                  if other > rank or (folder and other == rank and name != folder)]
        bad = sorted(n for n in module_imports(path) if any(n == b or n.startswith(b + ".") for b in banned))
        if bad:
            offenders[str(path.relative_to(PACKAGE_DIR))] = bad
    assert offenders == {}


def test_every_folder_says_what_it_holds():
    for init in sorted(PACKAGE_DIR.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring, f"{init.relative_to(PACKAGE_DIR)} has no docstring"


@pytest.mark.parametrize("old", sorted(MOVED_STUBS))
def test_an_old_module_path_names_the_new_one_and_exits_2(old):
    new = f"mtl_perception.{MOVED_STUBS[old]}"
    run = subprocess.run([sys.executable, "-m", f"mtl_perception.ros.{old}", "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ros_harness.REPO_ROOT)
    assert run.returncode == 2
    assert f"python -m {new}" in run.stderr
    assert run.stdout == ""  # nothing ran: no help text of the moved tool
    imported = subprocess.run([sys.executable, "-c", f"import mtl_perception.ros.{old}"],
                              capture_output=True, text=True, timeout=120, cwd=ros_harness.REPO_ROOT)
    assert imported.returncode == 1 and "ImportError" in imported.stderr and new in imported.stderr
