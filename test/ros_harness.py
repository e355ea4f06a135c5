"""Test harness: the colcon workspace environment, real node processes, and an
rclpy test node with wait helpers. Used by conftest.py's fixtures.

Nothing here imports rclpy at module level, so ROS-free tests run without it.
Also a tiny command-line publisher for tests that need a second process::

    python test/ros_harness.py publish mtl_perception/msg/InferenceStats /topic \
        '{"node_name": "a", "header": {"frame_id": "cam"}}' --rate 10 --count 50
"""

import argparse
import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_INSTALL = REPO_ROOT / ".ws" / "install"
WORKSPACE_PACKAGES = ("mtl_perception", "vision_msgs")
PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"


def install_prefix(package):
    """Install prefix of a workspace package, e.g. .ws/install/mtl_perception."""
    return WORKSPACE_INSTALL / package


def install_site_packages(package):
    return install_prefix(package) / "lib" / PYTHON_DIR / "site-packages"


def installed_executable(name):
    """Path of an executable installed from bin/ (what ``ros2 run mtl_perception name`` runs)."""
    path = install_prefix("mtl_perception") / "lib" / "mtl_perception" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is not installed; is bin/{name} there? run 'make build'")
    return path


def workspace_is_built():
    return all(install_site_packages(package).is_dir() for package in WORKSPACE_PACKAGES)


def stale_workspace_files():
    """Source files the symlink install lacks (they were added after the last build)."""
    missing = []
    installed_package = install_site_packages("mtl_perception") / "mtl_perception"
    for source in sorted((REPO_ROOT / "mtl_perception").rglob("*.py")):
        relative = source.relative_to(REPO_ROOT / "mtl_perception")
        if "__pycache__" not in relative.parts and not (installed_package / relative).exists():
            missing.append(f"mtl_perception/{relative}")
    installed_bin = install_prefix("mtl_perception") / "lib" / "mtl_perception"
    bin_dir = REPO_ROOT / "bin"
    if bin_dir.is_dir():
        for source in sorted(bin_dir.iterdir()):
            if source.is_file() and not (installed_bin / source.name).exists():
                missing.append(f"bin/{source.name}")
    return missing


def rebuild_workspace():
    """Run the incremental colcon build (scripts/build_ws.sh); raise with its output on failure."""
    result = subprocess.run([str(REPO_ROOT / "scripts" / "build_ws.sh")], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build_ws.sh failed ({result.returncode}):\n{result.stdout}")


def _prepend_env_path(name, entries):
    current = [part for part in os.environ.get(name, "").split(os.pathsep) if part]
    new = [str(entry) for entry in entries if str(entry) not in current]
    os.environ[name] = os.pathsep.join(new + current)


def _preload_libraries(lib_dirs):
    # rosidl's type support dispatch dlopens libraries by file name, searching
    # LD_LIBRARY_PATH as it was at process start. Loading them by full path
    # first lets those lookups match the already loaded objects.
    pending = [path for lib_dir in lib_dirs for path in sorted(lib_dir.glob("lib*.so"))]
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path))
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            raise RuntimeError(f"cannot load workspace libraries: {[str(p) for p in failed]}")
        pending = failed


def activate_workspace():
    """Make this process and its children use the colcon install in .ws/install.

    Same effect as sourcing scripts/ros_env.sh: PATH, AMENT_PREFIX_PATH,
    PYTHONPATH and LD_LIBRARY_PATH for child processes, sys.path for this one,
    so ``mtl_perception`` resolves to the install (with the generated
    ``mtl_perception.msg``). Call before importing mtl_perception or rclpy.
    """
    lib_dirs = [install_prefix(package) / "lib" for package in WORKSPACE_PACKAGES]
    loader_paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    needs_preload = any(str(lib_dir) not in loader_paths for lib_dir in lib_dirs)

    site_dirs = [install_site_packages(package) for package in WORKSPACE_PACKAGES]
    for site_dir in reversed(site_dirs):
        if str(site_dir) in sys.path:
            sys.path.remove(str(site_dir))
        sys.path.insert(0, str(site_dir))
    _prepend_env_path("PYTHONPATH", site_dirs)
    _prepend_env_path("LD_LIBRARY_PATH", lib_dirs)
    _prepend_env_path("AMENT_PREFIX_PATH",
                      [install_prefix(package) for package in WORKSPACE_PACKAGES] + [sys.prefix])
    _prepend_env_path("PATH", [Path(sys.prefix) / "bin"])
    if needs_preload:
        _preload_libraries(lib_dirs)


def require_launch():
    """Skip the calling test unless the ROS ``launch_ros`` package is importable."""
    import pytest

    return pytest.importorskip(
        "launch_ros", reason="launch_ros is not installed (not on PyPI; needs a real ROS 2)")


LOCALHOST_PROFILE = REPO_ROOT / "config" / "fastdds_localhost.xml"


def set_test_ros_environment(domain_id):
    """Isolate this test session's DDS traffic: own domain, localhost only.

    Localhost-only comes from the Fast DDS profile config/fastdds_localhost.xml, not from
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: that setting swaps LARGE_DATA for UDP on
    loopback, where best-effort camera frames are lost (see the profile's comment).
    """
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(LOCALHOST_PROFILE)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted; avoid confusion
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def _child_setup():
    # A shell running us in the background may have set SIGINT to "ignore",
    # which children inherit and Python then honours: restore the default so
    # nodes get KeyboardInterrupt. Own process group, so stop() reaches the
    # node's children (e.g. a launch file's nodes) too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setsid()


class NodeProcess:
    """A process started by :func:`start_process`; output goes to ``log_path``."""

    def __init__(self, command, log_path, env=None, cwd=None):
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        with open(self.log_path, "wb") as log_file:
            self.popen = subprocess.Popen(
                self.command, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_child_setup)

    @property
    def returncode(self):
        return self.popen.poll()

    def output(self):
        """Everything the process printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout):
        """Wait for exit; returns the exit code (raises subprocess.TimeoutExpired)."""
        return self.popen.wait(timeout)

    def stop(self, sigint_timeout=5.0, sigterm_timeout=3.0):
        """SIGINT, wait, SIGTERM, wait, SIGKILL (to the whole process group).

        Returns the exit code.
        """
        for sig, timeout in ((signal.SIGINT, sigint_timeout),
                             (signal.SIGTERM, sigterm_timeout),
                             (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        try:  # leftovers of the group, e.g. a node whose parent already exited
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.popen.wait()


def start_process(command, log_path, env=None, cwd=None):
    """Start ``command`` (a list) with its output in ``log_path``; see :class:`NodeProcess`."""
    return NodeProcess(command, log_path, env=env, cwd=cwd)


def import_message_type(type_name):
    """``'pkg/msg/Type'`` -> the rclpy message class."""
    parts = type_name.split("/")
    if len(parts) != 3:
        raise ValueError(f"message type must look like 'pkg/msg/Type', got {type_name!r}")
    package, kind, name = parts
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def message_from_fields(msg_type, fields):
    """Build a message from a dict; nested messages from nested dicts."""
    msg = msg_type()
    field_types = msg_type.get_fields_and_field_types()
    for name, value in fields.items():
        if name not in field_types:
            raise ValueError(f"{msg_type.__name__} has no field {name!r}")
        if isinstance(value, dict):
            value = message_from_fields(type(getattr(msg, name)), value)
        setattr(msg, name, value)
    return msg


class MessageCollector:
    """Subscription that stores every message it gets; see RosTestNode.collect."""

    def __init__(self, node, topic, msg_type, qos):
        self.messages = []
        self._node = node
        self._condition = threading.Condition()
        self.subscription = node.create_subscription(msg_type, topic, self._callback, qos)

    def _callback(self, msg):
        with self._condition:
            self.messages.append(msg)
            self._condition.notify_all()

    def wait_for(self, count=1, timeout=10.0):
        """Wait until ``count`` messages arrived; returns the first ``count``."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self.messages) >= count, timeout)
            if not arrived:
                raise TimeoutError(
                    f"got {len(self.messages)} of {count} messages on "
                    f"{self.subscription.topic_name} within {timeout} s")
            return list(self.messages[:count])

    def close(self):
        self._node.destroy_subscription(self.subscription)


class RosTestNode:
    """An rclpy node spinning in a background thread, with wait helpers.

    Attributes:
        node: the ``rclpy.node.Node``; use it to create publishers etc.
    """

    def __init__(self, name="mtl_test_harness"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    @staticmethod
    def default_qos(depth=10):
        """Best effort, volatile: matches both reliable and best-effort publishers."""
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.BEST_EFFORT)

    def collect(self, topic, msg_type, qos=None):
        """Start collecting ``topic`` now (before triggering the publisher).

        Returns a :class:`MessageCollector`; call ``close()`` when done.
        """
        return MessageCollector(self.node, topic, msg_type, qos or self.default_qos(100))

    def wait_for_messages(self, topic, msg_type, count=1, timeout=10.0, qos=None):
        """Subscribe, wait for ``count`` messages, unsubscribe; returns them.

        Raises TimeoutError naming the topic and how many arrived.
        """
        collector = self.collect(topic, msg_type, qos or self.default_qos(max(10, count)))
        try:
            return collector.wait_for(count, timeout)
        finally:
            collector.close()

    def _wait_for_graph(self, count_endpoints, what, topic, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = count_endpoints(topic)
            if found > 0:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"no {what} on {topic} within {timeout} s")

    def wait_for_publisher(self, topic, timeout=10.0):
        """Wait until some process publishes ``topic``; returns the publisher count."""
        return self._wait_for_graph(self.node.count_publishers, "publisher", topic, timeout)

    def wait_for_subscriber(self, topic, timeout=10.0):
        """Wait until some process subscribes to ``topic``; returns the subscriber count."""
        return self._wait_for_graph(self.node.count_subscribers, "subscriber", topic, timeout)

    def shutdown(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def _publish_main(args):
    import rclpy

    msg_type = import_message_type(args.type)
    msg = message_from_fields(msg_type, json.loads(args.fields))
    rclpy.init()
    node = rclpy.create_node("mtl_test_publisher")
    publisher = node.create_publisher(msg_type, args.topic, 10)
    sent = 0
    try:
        while args.count <= 0 or sent < args.count:
            publisher.publish(msg)
            sent += 1
            time.sleep(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="publish one message repeatedly")
    publish.add_argument("type", help="pkg/msg/Type")
    publish.add_argument("topic")
    publish.add_argument("fields", help="JSON object of field values")
    publish.add_argument("--rate", type=float, default=10.0, help="Hz")
    publish.add_argument("--count", type=int, default=0, help="0: until interrupted")
    args = parser.parse_args(argv)
    _publish_main(args)


if __name__ == "__main__":
    main()
