"""/diagnostics of the nodes: a rolling window of frame outcomes -> ``diagnostic_msgs/DiagnosticStatus``.

Every node publishes one ``DiagnosticArray`` on ``/diagnostics`` about once a second (what
rqt_robot_monitor and diagnostic_aggregator read). Level:

* ERROR: the node is unconfigured, or every frame of the last window failed;
* WARN: inactive, frames were dropped in the last window, or the median latency is above
  the node's ``diagnostics_slow_ms``;
* OK otherwise (also while no images arrive: the message says so).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_PERIOD_S = 1.0
_LATENCIES_KEPT = 200


class FrameHealth:
    """Thread-safe counters of one node's frames, with a window reset at every report.

    ``processed(latency_ms)``, ``dropped()`` and ``failed(reason)`` are called from any thread;
    :meth:`window` returns what happened since the previous call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._window_start = time.monotonic()
        self._processed = self._dropped = self._failed = 0
        self.last_error = ""

    def processed(self, latency_ms: float) -> None:
        with self._lock:
            self._processed += 1
            self._latencies.append(float(latency_ms))

    def dropped(self) -> None:
        with self._lock:
            self._dropped += 1

    def failed(self, reason: str) -> None:
        """A frame that was dropped because it could not be handled (also counts as dropped)."""
        with self._lock:
            self._dropped += 1
            self._failed += 1
            self.last_error = reason

    def window(self) -> dict:
        """``fps``, ``latency_p50_ms`` (nan without frames), ``processed``, ``dropped``, ``failed``
        since the last call; starts a new window."""
        with self._lock:
            now = time.monotonic()
            seconds = max(now - self._window_start, 1e-6)
            latencies = list(self._latencies)
            result = {"fps": self._processed / seconds,
                      "latency_p50_ms": float(np.median(latencies)) if latencies else float("nan"),
                      "processed": self._processed, "dropped": self._dropped, "failed": self._failed}
            self._latencies.clear()
            self._processed = self._dropped = self._failed = 0
            self._window_start = now
            return result


def health_status(name: str, hardware_id: str, state: str, window: dict, slow_ms: float,
                  values: dict[str, object]) -> DiagnosticStatus:
    """The DiagnosticStatus of one node.

    Args:
        name: status name, e.g. ``'/mt/multitask_node: inference'``.
        hardware_id: e.g. the torch device.
        state: lifecycle state label (``unconfigured``, ``inactive``, ``active``, ...).
        window: :meth:`FrameHealth.window`'s result.
        slow_ms: median latency above which the node is reported slow (<= 0: never).
        values: more key/values to show (device, model, GPU memory, totals...).
    """
    level, message = DiagnosticStatus.OK, "ok"
    if state != "active":
        level = DiagnosticStatus.ERROR if state in ("unconfigured", "finalized") else DiagnosticStatus.WARN
        message = state
    elif window["failed"] and not window["processed"]:
        level, message = DiagnosticStatus.ERROR, f"failing: {window['failed']} frames failed, none served"
    elif window["dropped"]:
        level, message = DiagnosticStatus.WARN, f"dropping frames ({window['dropped']} in the last window)"
    elif slow_ms > 0 and window["latency_p50_ms"] > slow_ms:
        level, message = DiagnosticStatus.WARN, f"slow: latency p50 {window['latency_p50_ms']:.1f} ms > {slow_ms:g} ms"
    elif not window["processed"]:
        message = "ok, no images in the last window"
    entries = {"state": state, "fps": f"{window['fps']:.2f}", "latency_p50_ms": f"{window['latency_p50_ms']:.2f}",
               "dropped_in_window": window["dropped"], **values}
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in entries.items()])


def diagnostic_array(stamp, status: DiagnosticStatus) -> DiagnosticArray:
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
