"""Memory and CPU of a graph's processes, read from /proc (through psutil) while it runs."""

from __future__ import annotations

import math
import threading
import time

from mtl_perception.graphs.budget import format_cpu_list


class ProcessSampler:
    """Peak RSS of each node process (with its children) every ``period`` s, CPU time on demand.

    Args:
        pids: node name → pid.
        period: RSS sampling period (s).
    """

    def __init__(self, pids: dict[str, int], period: float = 0.2):
        import psutil

        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_mb = {name: 0.0 for name in pids}
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self, process):
        return [process, *process.children(recursive=True)]

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, rss in self.rss_mb().items():
                if math.isfinite(rss):
                    self.peak_mb[name] = max(self.peak_mb[name], rss)
            self._stop.wait(self._period)

    def cpu_seconds(self) -> tuple[float, dict[str, float]]:
        """(monotonic now, {node: user + system CPU seconds of its process tree so far})."""
        import psutil

        now = time.monotonic()
        result = {}
        for name, process in self._processes.items():
            try:
                result[name] = sum(sum(p.cpu_times()[:2]) for p in self._tree(process))
            except psutil.Error:
                result[name] = float("nan")
        return now, result

    def rss_mb(self) -> dict[str, float]:
        """Current RSS of each node's process tree (MB)."""
        import psutil

        result = {}
        for name, process in self._processes.items():
            try:
                result[name] = sum(p.memory_info().rss for p in self._tree(process)) / 2**20
            except psutil.Error:
                result[name] = float("nan")
        return result

    def placement(self) -> dict[str, dict]:
        """Per node, as the kernel sees it: allowed CPUs of every thread, and the thread count."""
        import psutil

        result = {}
        for name, process in self._processes.items():
            try:
                cpus = {format_cpu_list(tuple(psutil.Process(t.id).cpu_affinity())) for t in process.threads()}
                result[name] = {"cpus": " | ".join(sorted(cpus)), "threads": process.num_threads()}
            except psutil.Error:
                result[name] = {"cpus": "n/a", "threads": None}
        return result

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=2.0)
        return dict(self.peak_mb)


def cpu_percent(start: tuple[float, dict[str, float]], end: tuple[float, dict[str, float]]) -> dict[str, float]:
    """Per node, CPU use between two :meth:`ProcessSampler.cpu_seconds` readings, in % of one core."""
    wall = end[0] - start[0]
    return {name: 100.0 * (end[1][name] - start[1].get(name, 0.0)) / wall if wall > 0 else float("nan")
            for name in end[1]}
