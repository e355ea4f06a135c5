"""Peak throughput by searching the publish rate, as ros2_benchmark measures it (no ROS here).

A rate passes when at most :data:`MAX_LOSS` of the frames sent lack an output and the
output rate stays within :data:`RATE_TOLERANCE` of the input rate. The peak is the
highest passing rate a binary search between two bounds finds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

MAX_LOSS = 0.05
RATE_TOLERANCE = 0.10


@dataclass(frozen=True)
class RateTrial:
    """One run at a fixed publish rate.

    Attributes:
        rate_hz: requested publish rate.
        published: frames sent.
        answered: frames that got every output.
        input_fps: achieved publish rate (first to last send).
        output_fps: rate of answered frames (first to last answer).
    """

    rate_hz: float
    published: int
    answered: int
    input_fps: float
    output_fps: float

    @property
    def loss(self) -> float:
        return 1.0 - self.answered / self.published if self.published else 1.0

    @property
    def passed(self) -> bool:
        return rate_passes(self.published, self.answered, self.input_fps, self.output_fps)

    def as_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss, "passed": self.passed}


def rate_passes(published: int, answered: int, input_fps: float, output_fps: float) -> bool:
    """≤ 5 % of frames without every output, and output rate ≥ 90 % of the input rate."""
    if published <= 0 or not (math.isfinite(input_fps) and math.isfinite(output_fps)) or input_fps <= 0:
        return False
    return (published - answered) <= MAX_LOSS * published and output_fps >= (1.0 - RATE_TOLERANCE) * input_fps


def events_per_second(times: list[float]) -> float:
    """Rate of events at sorted ``times`` (s): (n - 1) / (last - first); NaN for fewer than two."""
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass(frozen=True)
class PeakSearch:
    """Result of :func:`search_peak_rate`.

    Attributes:
        peak: the best passing trial (None when even ``low`` failed).
        trials: every trial in the order run.
        low, high: the bounds searched.
        at_bound: the peak is ``high`` itself (the real peak may be higher).
    """

    peak: RateTrial | None
    trials: list[RateTrial]
    low: float
    high: float
    at_bound: bool

    @property
    def peak_fps(self) -> float:
        """The peak's measured output rate (NaN when nothing passed)."""
        return self.peak.output_fps if self.peak else math.nan

    def as_dict(self) -> dict:
        return {"peak_fps": self.peak_fps, "peak_rate_hz": self.peak.rate_hz if self.peak else None,
                "low_hz": self.low, "high_hz": self.high, "at_bound": self.at_bound,
                "below_low": self.peak is None, "trials": [t.as_dict() for t in self.trials]}


def search_peak_rate(trial: Callable[[float], RateTrial], low: float, high: float, steps: int = 5,
                     halvings: int = 3) -> PeakSearch:
    """Binary search of the publish rate between ``low`` and ``high`` Hz.

    ``low`` is tried first. If it fails the graph is slower than the estimate the bounds came
    from (a loaded machine, say), so ``low`` is halved up to ``halvings`` times until a rate
    passes, and the failed rate above it becomes the upper bound; if none passes there is no
    peak in range. Then ``steps`` bisections keep the highest passing rate below the lowest
    failing one, ``high`` being assumed to fail until tried. If every bisection passed,
    ``high`` itself is tried last.

    Args:
        trial: runs the graph at a rate and returns the :class:`RateTrial`.
        low, high: bounds in Hz, ``0 < low < high``.
        steps: bisections (the peak is resolved to ``(high - low) / 2**steps``).
        halvings: how far below ``low`` to look when ``low`` fails.
    """
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got {low}, {high}")
    trials = [trial(low)]
    hi, hi_tried = high, False
    while not trials[-1].passed and len(trials) <= halvings:
        hi, hi_tried = trials[-1].rate_hz, True
        trials.append(trial(hi / 2))
    low = trials[-1].rate_hz
    if not trials[-1].passed:
        return PeakSearch(None, trials, low, high, False)
    best, lo = trials[-1], low
    for _ in range(steps):
        result = trial((lo + hi) / 2)
        trials.append(result)
        if result.passed:
            best, lo = result, result.rate_hz
        else:
            hi, hi_tried = result.rate_hz, True
    at_bound = False
    if not hi_tried:
        result = trial(high)
        trials.append(result)
        if result.passed:
            best, at_bound = result, True
    return PeakSearch(best, trials, low, high, at_bound)
