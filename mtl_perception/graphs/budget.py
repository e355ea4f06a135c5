"""The compute budget of a graph: which CPUs and torch threads (or which GPU) its processes get.

Multitask vs naive is a claim about one device. ``shared`` (the default) gives every
process of a graph the same CPU set and every inference process the same torch thread
count, or the same GPU, so the naive graph's two networks compete for one device as on a
drone. ``per-network`` is the old behaviour: no pinning, each network its own threads, so
the naive graph may compute on two cores at once; reports label it as such.

Default CPU plan for ``shared``: the first allowed CPU runs the replay (publisher, recorder,
memory/CPU sampler), the others run the graph, one torch thread per graph CPU. On a
2-core machine: replay on CPU 0, graph on CPU 1, one torch thread per inference process.
On one core, both share it.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

BUDGETS = ("shared", "per-network")
DEFAULT_BUDGET = "shared"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"1"``, ``"0,2"``, ``"2-3"`` (the Cpus_allowed_list format) → sorted CPU ids.

    Raises:
        ValueError: not a CPU list.
    """
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"not a CPU list: {text!r} (e.g. 1 or 0,2 or 2-3)")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"not a CPU list: {text!r} ({part} runs backwards)")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...]) -> str:
    """Sorted CPU ids → the Cpus_allowed_list format (``(0, 1, 2, 5)`` → ``"0-2,5"``)."""
    ranges: list[str] = []
    for cpu in sorted(cpus):
        if ranges and cpu == int(ranges[-1].split("-")[-1]) + 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{cpu}"
        else:
            ranges.append(str(cpu))
    return ",".join(ranges)


def check_device(device: str | None) -> str | None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (else ValueError)."""
    if device is None or device in ("auto", "cpu") or _CUDA.match(device):
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


@dataclass(frozen=True)
class ComputeBudget:
    """What a graph may use. ``None`` fields leave things as they are (the YAML's, the OS's).

    Attributes:
        mode: ``shared`` or ``per-network``.
        graph_cpus: CPU set of every process of the graph.
        replay_cpus: CPU set of the measuring process (publisher, recorder, samplers).
        threads: torch intra-op threads of every inference process (node ``cpu_threads``).
        device: node ``device`` (``cuda:N`` is passed to the nodes as ``cuda`` with
            ``CUDA_VISIBLE_DEVICES=N``, so every network of the graph shares GPU N).
    """

    mode: str
    graph_cpus: tuple[int, ...] | None = None
    replay_cpus: tuple[int, ...] | None = None
    threads: int | None = None
    device: str | None = None

    @property
    def gpu_index(self) -> int | None:
        match = _CUDA.match(self.device or "")
        return int(match.group(1)) if match and match.group(1) is not None else None

    def node_arguments(self) -> dict[str, object]:
        """Graph arguments (see :func:`mtl_perception.graphs.graph.node_overrides`) of this budget."""
        arguments: dict[str, object] = {}
        if self.threads is not None:
            arguments["cpu_threads"] = self.threads
        if self.device:
            arguments["device"] = "cuda" if self.device.startswith("cuda") else self.device
        return arguments

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for the graph's processes (``CUDA_VISIBLE_DEVICES`` for ``cuda:N``)."""
        env = dict(env)
        if self.gpu_index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu_index)
        return env

    def describe(self) -> str:
        """The budget line of every report."""
        if self.mode == "per-network":
            threads = f"{self.threads} torch thread(s)" if self.threads else "the YAML's cpu_threads"
            text = (f"per-network: no CPU pinning, each inference process runs {threads} of its own, so the naive "
                    f"graph's two networks may compute on different cores at once (NOT an equal budget)")
        else:
            cpus = f"CPU {format_cpu_list(self.graph_cpus)}" if self.graph_cpus else "all CPUs (unpinned)"
            threads = f"{self.threads} torch thread(s) per inference process" if self.threads else "the YAML's cpu_threads"
            text = f"shared: every process of the graph on {cpus}, {threads}"
            if self.replay_cpus and self.replay_cpus != self.graph_cpus:
                text += f"; replay/recorder/sampler on CPU {format_cpu_list(self.replay_cpus)}"
            elif self.graph_cpus:
                text += "; the replay shares those CPUs (no spare core)"
        if self.device and self.device.startswith("cuda"):
            text += f"; every network on GPU {self.device if self.gpu_index is not None else 'cuda (device 0)'}"
        return text

    def as_dict(self) -> dict:
        return {"mode": self.mode, "graph_cpus": list(self.graph_cpus) if self.graph_cpus else None,
                "replay_cpus": list(self.replay_cpus) if self.replay_cpus else None, "threads": self.threads,
                "device": self.device, "line": self.describe()}


def plan_budget(mode: str = DEFAULT_BUDGET, device: str | None = None, graph_cpus: str | None = None,
                threads: int | None = None, available: tuple[int, ...] | None = None) -> ComputeBudget:
    """The budget for ``mode`` on this machine (see the module doc for the default CPU plan).

    Args:
        mode: ``shared`` or ``per-network``.
        device: node device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); None = the YAML's.
        graph_cpus: CPU list for the graph (``shared`` only); None = all allowed CPUs but the first.
        threads: torch threads per inference process; None = one per graph CPU (``shared``),
            the YAML's (``per-network``).
        available: CPUs this process may use (default ``os.sched_getaffinity(0)``).

    Raises:
        ValueError: unknown mode, bad device or CPU list, CPUs this process may not use.
    """
    if mode not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {mode!r}")
    check_device(device)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    allowed = tuple(sorted(available if available is not None else os.sched_getaffinity(0)))
    if mode == "per-network":
        if graph_cpus:
            raise ValueError("--graph-cpus applies to the shared budget only")
        return ComputeBudget(mode, threads=threads, device=device)
    if graph_cpus:
        chosen = parse_cpu_list(graph_cpus)
        outside = [c for c in chosen if c not in allowed]
        if outside:
            raise ValueError(f"CPUs {outside} are not available to this process (allowed: {format_cpu_list(allowed)})")
        spare = tuple(c for c in allowed if c not in chosen)
        replay = spare or chosen
    elif len(allowed) >= 2:
        replay, chosen = allowed[:1], allowed[1:]
    else:
        replay = chosen = allowed
    return ComputeBudget(mode, graph_cpus=chosen, replay_cpus=replay, threads=threads or len(chosen), device=device)


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None):
    """Run the block with the calling thread on ``cpus`` (threads and processes it starts inherit it)."""
    if not cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def add_budget_arguments(parser) -> None:
    """``--budget``, ``--graph-cpus``, ``--cpu-threads`` (graph, replay, compare and demo CLIs)."""
    parser.add_argument("--budget", choices=BUDGETS, default=DEFAULT_BUDGET,
                        help="shared (default): every process of the graph on one CPU set with the same torch threads, "
                             "or one GPU; per-network: each network its own share (unequal, labelled so)")
    parser.add_argument("--graph-cpus", help="shared budget: the graph's CPU list, e.g. 1 or 2-3 "
                                             "(default: every allowed CPU but the first, which runs the replay)")
    parser.add_argument("--cpu-threads", type=int, help="torch threads per inference process "
                                                        "(default: one per graph CPU; per-network: the YAML's)")


def budget_from_args(args) -> ComputeBudget:
    return plan_budget(args.budget, getattr(args, "device", None), args.graph_cpus, args.cpu_threads)
