"""The two node graphs, and a CLI that starts them without ``launch``.

``GRAPHS`` is the single definition of which nodes make up the multitask graph and the
naive baseline; the launch files and this CLI both read it, and both load the same
parameter YAML (``config/mtl_perception.yaml``), so there is one source of truth.

    python -m mtl_perception.graphs.graph multitask [--params config/mtl_perception.yaml]
        [--namespace NS] [--camera-topic /camera/image_raw] [--checkpoint PATH]
        [--device auto|cuda|cuda:N|cpu] [--backend auto|torch|onnxruntime] [--precision fp32|int8|...]
        [--engine-cache-dir DIR] [--calibration BAG_OR_FOLDER] [--use-lifecycle] [--input-transport raw|compressed]
        [--reliability best_effort|reliable] [--budget shared|per-network] [--graph-cpus 1] [--cpu-threads 1]
    python -m mtl_perception.graphs.graph naive [--segmentation-checkpoint P] [--detection-checkpoint P] ...
    python -m mtl_perception.graphs.graph multitask_multicam [--cameras front,down] [--checkpoint PATH] ...

``multitask_multicam`` is one multicam_node serving every camera of ``cameras`` (inputs
``<namespace>/<camera>/image``) with one network; its naive equivalent is one multitask
graph per camera (``multitask --namespace <camera>``).

The process runs until interrupted (SIGINT/SIGTERM stops every node: SIGINT, then
SIGTERM, then SIGKILL) or until a node exits, which stops the others.
``--budget`` (:mod:`mtl_perception.graphs.budget`) pins every node to one CPU set with the
same torch threads (``shared``, the default) or leaves each network its own share.

Exit codes: 0 stopped by a signal; 1 a node exited while running; 2 bad arguments,
parameter file or checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mtl_perception.bags.topics import DEFAULT_CAMERA_TOPIC
from mtl_perception.engines.backends import BACKENDS, PRECISIONS
from mtl_perception.graphs.budget import ComputeBudget, add_budget_arguments, budget_from_args, check_device, pinned
from mtl_perception.ros.paths import PACKAGE, resolve_package_path

DEFAULT_PARAMS = "config/mtl_perception.yaml"
# Graph arguments that map to the same-named parameter of every inference node.
_CAMERA_ARGUMENTS = ("input_transport", "reliability")
_INFERENCE_ARGUMENTS = ("device", "backend", "precision", "engine_cache_dir", "calibration", "cpu_threads",
                        *_CAMERA_ARGUMENTS)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph: its executable (= node name) and how graph arguments map to its parameters."""

    executable: str
    argument_params: tuple[tuple[str, str], ...] = ()  # (graph argument, node parameter)
    inference: bool = True  # takes the inference nodes' parameters (device, cpu_threads, ...)


GRAPHS: dict[str, tuple[NodeSpec, ...]] = {
    "multitask": (NodeSpec("multitask_node", (("checkpoint", "checkpoint"),)),),
    "naive": (
        NodeSpec("segmentation_node", (("segmentation_checkpoint", "checkpoint"),)),
        NodeSpec("detection_node", (("detection_checkpoint", "checkpoint"),)),
        NodeSpec("overlay_node", (), inference=False),
    ),
    "multitask_multicam": (NodeSpec("multicam_node", (("checkpoint", "checkpoint"), ("cameras", "cameras"))),),
}


ENGINE_ARGUMENTS = ("backend", "precision", "engine_cache_dir", "calibration")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--precision``, ``--engine-cache-dir``, ``--calibration`` (graph, replay, compare
    CLIs): the nodes' engine."""
    parser.add_argument("--backend", choices=BACKENDS,
                        help="inference engine of every node: auto (onnxruntime on the CPU) | torch | onnxruntime "
                             "(default: the YAML's)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32 | fp16 | bf16 (torch) | int8 (onnxruntime on the CPU: int8 .onnx checkpoints) "
                             "(default: the YAML's)")
    parser.add_argument("--engine-cache-dir", help="where .pt checkpoints' ONNX exports are cached (default: the YAML's)")
    parser.add_argument("--calibration", help="precision int8 from a .pt checkpoint: a rosbag or image folder of this "
                                              "camera's frames to calibrate on (default: the YAML's)")


def camera_list(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """``'front, down'`` or ``['front', 'down']`` -> ``['front', 'down']`` (the ``cameras`` parameter)."""
    names = value.split(",") if isinstance(value, str) else list(value)
    return [name.strip() for name in names if name.strip()]


def node_overrides(graph: str, arguments: dict[str, object]) -> dict[str, dict[str, object]]:
    """Parameter overrides per node from graph arguments; empty/None arguments leave the YAML's value.

    Arguments: ``checkpoint`` (multitask, multitask_multicam), ``cameras`` (multitask_multicam: a
    list or comma-separated names), ``segmentation_checkpoint``, ``detection_checkpoint`` (naive), ``device``,
    ``backend``, ``precision``, ``engine_cache_dir``, ``calibration``, ``cpu_threads``, ``input_transport``,
    ``reliability``,
    ``use_lifecycle``.
    ``reliability`` and ``input_transport`` also reach overlay_node's camera subscription.
    """
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {sorted(GRAPHS)}")
    overrides: dict[str, dict[str, object]] = {}
    for spec in GRAPHS[graph]:
        params: dict[str, object] = {}
        for argument, parameter in spec.argument_params:
            if arguments.get(argument):
                value = arguments[argument]
                params[parameter] = camera_list(value) if parameter == "cameras" else str(value)
        if spec.inference:
            for name in _INFERENCE_ARGUMENTS:
                if arguments.get(name):
                    params[name] = int(arguments[name]) if name == "cpu_threads" else str(arguments[name])
        else:  # overlay_node reads the camera as the task nodes do
            for name in _CAMERA_ARGUMENTS:
                if arguments.get(name):
                    params[name] = str(arguments[name])
        if arguments.get("use_lifecycle") is not None:  # every node is a lifecycle node
            params["managed"] = bool(arguments["use_lifecycle"])
        overrides[spec.executable] = params
    return overrides


def node_parameters(graph: str, params_file: str | os.PathLike, arguments: dict[str, object] | None = None) -> dict[str, dict]:
    """The parameters each node of ``graph`` will get: YAML (``/**`` then ``/**/<node>``) plus the overrides."""
    import yaml

    path = resolve_package_path(str(params_file))
    data = yaml.safe_load(path.read_text()) or {}
    common = (data.get("/**") or {}).get("ros__parameters", {})
    overrides = node_overrides(graph, arguments or {})
    result = {}
    for spec in GRAPHS[graph]:
        own = (data.get(f"/**/{spec.executable}") or data.get(spec.executable) or {}).get("ros__parameters", {})
        result[spec.executable] = {**common, **own, **overrides[spec.executable]}
    return result


def write_overrides_file(overrides: dict[str, dict[str, object]], directory: str | os.PathLike) -> Path:
    """Write per-node overrides as a parameter YAML keyed ``/**/<node>`` into ``directory``.

    A ``-p`` override (or a launch dict) goes under ``/**``, which loses to the YAML's
    node-specific ``/**/<node>`` entries; loaded after the YAML under the same key, these
    values win. The caller owns ``directory`` and removes it. Returns the file's path.
    """
    import yaml

    data = {f"/**/{node}": {"ros__parameters": params} for node, params in overrides.items() if params}
    Path(directory).mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="mtl_overrides_", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle)
    return Path(path)


def _executable(name: str) -> list[str]:
    """The installed executable (lib/mtl_perception/<name>), else ``python -m``."""
    try:
        from ament_index_python.packages import get_package_prefix

        candidate = Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [sys.executable, str(candidate)]
    except Exception:  # not installed through ament: run the module
        pass
    return [sys.executable, "-m", f"mtl_perception.ros.{name}"]


def check_checkpoints(graph: str, parameters: dict[str, dict]) -> None:
    """Every ``*checkpoint`` parameter of the graph names a file (else FileNotFoundError, exit 2)."""
    for spec in GRAPHS[graph]:
        for name, value in parameters[spec.executable].items():
            if name.endswith("checkpoint"):
                if not value:
                    raise ValueError(f"{spec.executable}: parameter {name} is empty")
                if not resolve_package_path(str(value)).is_file():
                    raise FileNotFoundError(f"{spec.executable}: {name} {value} is not a file")


def node_commands(graph: str, params_file: str | os.PathLike, overrides_dir: str | os.PathLike, namespace: str = "",
                  camera_topic: str = DEFAULT_CAMERA_TOPIC, arguments: dict[str, object] | None = None,
                  log_level: str | None = None) -> dict[str, list[str]]:
    """The command line of every node of ``graph``; overrides go to a file in ``overrides_dir``
    (the caller removes it when the graph stops)."""
    params_path = resolve_package_path(str(params_file))
    if not params_path.is_file():
        raise FileNotFoundError(f"parameter file not found: {params_file}")
    overrides = node_overrides(graph, arguments or {})
    overrides_file = write_overrides_file(overrides, overrides_dir) if any(overrides.values()) else None
    commands = {}
    for spec in GRAPHS[graph]:
        command = _executable(spec.executable) + ["--ros-args", "--params-file", str(params_path), "-r", f"image:={camera_topic}"]
        if overrides_file is not None:
            command += ["--params-file", str(overrides_file)]
        if namespace:
            command += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
        if log_level:
            command += ["--log-level", log_level]
        commands[spec.executable] = command
    return commands


def localhost_profile() -> Path:
    """config/fastdds_localhost.xml: a one-machine graph whose camera frames survive best-effort QoS."""
    return resolve_package_path("config/fastdds_localhost.xml")


def use_localhost_transport(env: dict[str, str]) -> dict[str, str]:
    """Point ``env`` at the localhost Fast DDS profile unless it names a profile of its own.

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST would replace the profile's transports (and lose
    large best-effort frames), so the range is left to the profile (SYSTEM_DEFAULT).
    """
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(localhost_profile())
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    return env


def graph_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The nodes' environment: Fast DDS' LARGE_DATA transport unless set (see docs/dds.md)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class GraphProcesses:
    """The node processes of a running graph.

    Args:
        commands: node name → command (see :func:`node_commands`).
        log_dir: each node's output goes to ``<log_dir>/<node>.log``; None = inherit the terminal.
        env: base environment (default this process').
        budget: CPU set every node starts on (inherited from this thread at fork) and its
            environment (``CUDA_VISIBLE_DEVICES``); None = as this process.
        scratch: a folder :meth:`stop` removes (the overrides file lives there).
    """

    def __init__(self, commands: dict[str, list[str]], log_dir: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, budget: ComputeBudget | None = None,
                 scratch: str | os.PathLike | None = None):
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_paths: dict[str, Path] = {}
        self._scratch = scratch
        env = graph_environment(env)
        if budget is not None:
            env = budget.environment(env)
        try:
            with pinned(budget.graph_cpus if budget else None):
                for name, command in commands.items():
                    out = None
                    if log_dir is not None:
                        Path(log_dir).mkdir(parents=True, exist_ok=True)
                        self.log_paths[name] = Path(log_dir) / f"{name}.log"
                        out = open(self.log_paths[name], "wb")
                    self.processes[name] = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                                            stderr=subprocess.STDOUT if out else None,
                                                            start_new_session=True)
                    if out is not None:
                        out.close()
        except Exception:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_paths.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sigint_timeout: float = 5.0, sigterm_timeout: float = 3.0) -> dict[str, int]:
        """SIGINT, wait, SIGTERM, wait, SIGKILL (some nodes started from scripts ignore SIGINT);
        then remove the scratch folder."""
        try:
            for sig, timeout in ((signal.SIGINT, sigint_timeout), (signal.SIGTERM, sigterm_timeout), (signal.SIGKILL, 5.0)):
                alive = [p for p in self.processes.values() if p.poll() is None]
                if not alive:
                    break
                for process in alive:
                    try:
                        os.killpg(process.pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + timeout
                for process in alive:
                    try:
                        process.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
            return {name: p.wait() for name, p in self.processes.items()}
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)


def start_graph(graph: str, params_file: str | os.PathLike = DEFAULT_PARAMS, namespace: str = "",
                camera_topic: str = DEFAULT_CAMERA_TOPIC, arguments: dict[str, object] | None = None,
                log_dir: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                budget: ComputeBudget | None = None) -> GraphProcesses:
    """Start every node of ``graph`` within ``budget``; the caller stops them with ``.stop()``.

    ``budget`` adds its node arguments (threads, device) under ``arguments``' own.
    """
    arguments = {**(budget.node_arguments() if budget else {}), **{k: v for k, v in (arguments or {}).items() if v is not None}}
    scratch = tempfile.mkdtemp(prefix="mtl_graph_")
    try:
        commands = node_commands(graph, params_file, scratch, namespace, camera_topic, arguments)
    except Exception:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return GraphProcesses(commands, log_dir, env, budget, scratch=scratch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_perception.graphs.graph",
                                     description="Start the multitask graph or the naive two-node baseline without launch.")
    parser.add_argument("graph", choices=sorted(GRAPHS))
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="parameter YAML (the launch files' default too)")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    parser.add_argument("--checkpoint", help="multitask checkpoint (overrides the YAML)")
    parser.add_argument("--cameras", type=camera_list,
                        help="multitask_multicam: comma-separated camera namespaces, e.g. front,down (default: the YAML's)")
    parser.add_argument("--segmentation-checkpoint", help="naive graph: segmentation checkpoint")
    parser.add_argument("--detection-checkpoint", help="naive graph: detection checkpoint")
    parser.add_argument("--device", type=check_device, help="auto | cpu | cuda | cuda:N (default: the YAML's)")
    add_engine_arguments(parser)
    parser.add_argument("--input-transport", choices=("raw", "compressed"),
                        help="raw: subscribe to the camera topic; compressed: to <camera topic>/compressed")
    parser.add_argument("--reliability", choices=("best_effort", "reliable"), help="camera QoS (default: the YAML's)")
    parser.add_argument("--use-lifecycle", action="store_true", default=None,
                        help="start the inference nodes unconfigured (managed lifecycle nodes)")
    parser.add_argument("--log-dir", help="write each node's output to <dir>/<node>.log instead of the terminal")
    add_budget_arguments(parser)
    args = parser.parse_args(argv)
    arguments = {k: getattr(args, k) for k in ("checkpoint", "cameras", "segmentation_checkpoint", "detection_checkpoint",
                                               "input_transport", "reliability", "use_lifecycle", *ENGINE_ARGUMENTS)}
    stop_requested = []  # before any node starts: a signal at any moment stops the graph and cleans up
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.append(True))
    try:
        budget = budget_from_args(args)
        check_checkpoints(args.graph, node_parameters(args.graph, args.params, {**budget.node_arguments(), **arguments}))
        processes = start_graph(args.graph, args.params, args.namespace, args.camera_topic, arguments,
                                log_dir=args.log_dir, budget=budget)
    except (FileNotFoundError, ValueError) as exc:
        print(f"graph: error: {exc}", file=sys.stderr)
        return 2
    print(f"[graph] {args.graph}: " + ", ".join(f"{n} (pid {p})" for n, p in processes.pids().items()), flush=True)
    print(f"[graph] budget: {budget.describe()}", flush=True)
    try:
        while not stop_requested:
            exited = processes.exited()
            if exited:
                for name, code in exited.items():
                    print(f"[graph] {name} exited with code {code}", file=sys.stderr)
                    tail = processes.log_tail(name)
                    if tail:
                        print(tail, file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        processes.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
