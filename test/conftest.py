"""Session setup for every test, and the ROS fixtures.

At import (before anything imports rclpy) this gives the session its own
ROS_DOMAIN_ID (random in 100-199; set MTL_TEST_ROS_DOMAIN_ID to choose), its own
engine cache (MTL_ENGINE_CACHE_DIR, a temporary folder removed at the end),
localhost-only discovery and Fast DDS' LARGE_DATA transport, and makes
``mtl_perception`` resolve to the colcon install in .ws/install. New source
files reach that symlink install only by a build, so when some are missing
this runs the (incremental, ~2 s) build first; MTL_TEST_NO_AUTO_BUILD=1 turns
that into an error instead.

Fixtures for test authors:
    ros_node         session RosTestNode: .node, .collect(topic, type, qos),
                     .wait_for_messages(topic, type, count, timeout, qos),
                     .wait_for_publisher(topic, timeout), .wait_for_subscriber(...)
    launch_process   factory: launch_process(command_list, name=None, cwd=None)
                     -> NodeProcess (.output(), .stop(), .wait(t), .returncode),
                     stopped at teardown (SIGINT, SIGTERM, SIGKILL) and its
                     output printed if the test failed
    unique_topic     '/test_<random>' topic name
Markers: slow (left out by 'make test-fast'), smoke (quick subset for
MTL_SMOKE_ONLY), needs_launch (skipped, with the reason, unless launch_ros imports;
ros_harness.require_launch() does the same inside a test).
"""

import os
import random
import shutil
import sys
import tempfile
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import ros_harness  # noqa: E402

TEST_DOMAIN_ID = int(os.environ.get("MTL_TEST_ROS_DOMAIN_ID", random.randint(100, 199)))
# The engine cache (ONNX exports) of this session's processes and nodes: its own, never the user's.
ENGINE_CACHE_DIR = tempfile.mkdtemp(prefix="mtl_engine_cache_")
os.environ["MTL_ENGINE_CACHE_DIR"] = ENGINE_CACHE_DIR
ros_harness.set_test_ros_environment(TEST_DOMAIN_ID)
if ros_harness.workspace_is_built():
    _new_files = ros_harness.stale_workspace_files()
    if _new_files and not os.environ.get("MTL_TEST_NO_AUTO_BUILD"):
        sys.stderr.write(f"conftest: {len(_new_files)} new files are not in .ws/install "
                         "yet; running scripts/build_ws.sh\n")
        ros_harness.rebuild_workspace()
    ros_harness.activate_workspace()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; left out by 'make test-fast'")
    config.addinivalue_line("markers", "smoke: quick subset run by the nested CI check")
    config.addinivalue_line("markers", "needs_launch: needs the ROS launch/launch_ros packages")
    if ros_harness.workspace_is_built():
        missing = ros_harness.stale_workspace_files()
        if missing:
            raise pytest.UsageError(
                "these files are not in the colcon install .ws/install yet: "
                f"{', '.join(missing)}. Run 'make build'.")


def pytest_unconfigure(config):
    shutil.rmtree(ENGINE_CACHE_DIR, ignore_errors=True)


def pytest_report_header(config):
    if ros_harness.workspace_is_built():
        where = f"colcon install {ros_harness.WORKSPACE_INSTALL}"
    else:
        where = "source tree (no .ws/install: run 'make setup' for the ROS tests)"
    return [f"mtl_perception from {where}; ROS_DOMAIN_ID={TEST_DOMAIN_ID}, "
            f"FASTDDS_BUILTIN_TRANSPORTS={os.environ['FASTDDS_BUILTIN_TRANSPORTS']}"]


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_launch"):
        ros_harness.require_launch()


@pytest.fixture(scope="session")
def ros_node():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    if not ros_harness.workspace_is_built():
        pytest.fail(f"{ros_harness.WORKSPACE_INSTALL} is missing: run 'make setup'")
    node = ros_harness.RosTestNode()
    yield node
    node.shutdown()


@pytest.fixture
def unique_topic():
    return f"/test_{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


@pytest.fixture
def launch_process(request, tmp_path):
    """Start real processes that are always stopped at teardown.

    Processes run with this session's ROS environment, in ``tmp_path`` by
    default (not the repo root, whose source ``mtl_perception`` would shadow
    the install).
    """
    started = []

    def launch(command, name=None, cwd=None):
        name = name or f"process{len(started)}"
        process = ros_harness.start_process(
            command, tmp_path / f"{name}.log", env=dict(os.environ), cwd=cwd or tmp_path)
        started.append((name, process))
        return process

    yield launch
    failed = any(getattr(getattr(request.node, f"_report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    for name, process in started:
        code = process.stop()
        if failed:
            print(f"\n----- {name} ({' '.join(process.command)}) exited {code} -----\n"
                  f"{process.output()}")
