"""The replay's measuring runs against a live graph: warm-up, lockstep, bag rate, fixed-rate
streams, the peak-throughput search and the overlay capture.

Each run returns the frames it sent (stamp → monotonic send time); :func:`run_outcome`
turns them, the outputs received and the nodes' frame counters into the figures. Runs
other than the recorded-bag ones send fresh stamps (:meth:`ReplayNode.new_stamp`), so no
run can answer for another.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from mtl_perception.evaluation.report import latency_summary
from mtl_perception.replay.replay_messages import cdr_with_stamp
from mtl_perception.replay.replay_node import ReplayNode
from mtl_perception.replay.throughput import PeakSearch, RateTrial, events_per_second, search_peak_rate

RESEND_S = 5.0


class ReplayError(RuntimeError):
    """The graph failed to start or died during the replay."""


def check_alive(graph_processes) -> None:
    """Raise :class:`ReplayError` (with the node's log tail) if a node of the graph exited."""
    exited = graph_processes.exited()
    if exited:
        name, code = next(iter(exited.items()))
        raise ReplayError(f"{name} exited with code {code} during the replay:\n{graph_processes.log_tail(name)}")


def wait_until_ready(replay: ReplayNode, alive, graph: str, camera_message, subscribers: int, topics, timeout: float) -> None:
    """Wait for ``subscribers`` camera subscriptions, then send warm-up frames until one is answered."""
    deadline = time.monotonic() + timeout
    while replay.publisher.get_subscription_count() < subscribers:
        alive()
        if time.monotonic() > deadline:
            raise ReplayError(f"the {graph} graph did not subscribe to {replay.camera_topic} within {timeout} s")
        time.sleep(0.1)
    while True:
        stamp = replay.new_stamp()
        replay.publish_restamped(camera_message, stamp)
        if replay.wait_answered(stamp, topics, 5.0, alive):
            time.sleep(0.3)  # the warm-up frame's stats, before anyone snapshots the counters
            return
        if time.monotonic() > deadline:
            raise ReplayError(f"the {graph} graph never answered a warm-up frame within {timeout} s")


def run_lockstep(replay: ReplayNode, frames, topics, frame_timeout: float, alive, warnings: list[str]) -> tuple[dict, int]:
    """Each recorded frame waits for every output before the next is sent.

    Should a frame be lost on the wire (best-effort QoS) it is resent (same stamp) every
    RESEND_S; latency counts from the first send. Returns (sent, resends).
    """
    return _lockstep(replay, [(frame.stamp_ns, frame.rawdata) for frame in frames], topics, frame_timeout, alive,
                     warnings)


def lockstep_passes(frames: int, samples: int) -> int:
    """Lockstep passes over ``frames`` frames that give at least ``samples`` latency samples (>= 1)."""
    return max(1, math.ceil(samples / frames)) if frames else 1


def run_lockstep_passes(replay: ReplayNode, frames, passes: int, topics, frame_timeout: float, alive,
                        warnings: list[str]) -> tuple[dict, int]:
    """``passes`` more lockstep passes over the recorded frames, each frame under a fresh stamp
    (:meth:`ReplayNode.new_stamp`) and otherwise the recorded bytes: more latency samples of the
    same frames, apart from the accuracy pass. Returns (sent, resends)."""
    def sends():  # one restamped copy at a time, made before its send time is taken
        for _ in range(passes):
            for frame in frames:
                stamp = replay.new_stamp()
                yield stamp, cdr_with_stamp(frame.rawdata, stamp)

    return _lockstep(replay, sends(), topics, frame_timeout, alive, warnings)


def _lockstep(replay: ReplayNode, sends, topics, frame_timeout: float, alive,
              warnings: list[str]) -> tuple[dict, int]:
    published: dict[int, float] = {}
    resent = 0
    for stamp, rawdata in sends:
        deadline = time.monotonic() + frame_timeout
        published[stamp] = replay.publish_raw(rawdata)
        while not replay.wait_answered(stamp, topics, min(RESEND_S, deadline - time.monotonic()), alive):
            if time.monotonic() >= deadline:
                warnings.append(f"frame {stamp} ns got no complete output within {frame_timeout} s")
                break
            replay.publish_raw(rawdata)
            resent += 1
    time.sleep(0.3)  # the last frame's stats
    return published, resent


def run_bag_rate(replay: ReplayNode, frames, rate: float, alive) -> dict:
    """Send the recorded frames at the recorded rate × ``rate`` (nothing waits)."""
    published: dict[int, float] = {}
    first = frames[0].bag_time_ns
    start = time.monotonic()
    for frame in frames:
        time.sleep(max(0.0, start + (frame.bag_time_ns - first) / 1e9 / rate - time.monotonic()))
        published[frame.stamp_ns] = replay.publish_raw(frame.rawdata)
        alive()
    return published


def run_stream(replay: ReplayNode, messages: list, rate_hz: float, count: int, alive) -> dict:
    """Send ``count`` frames at ``rate_hz`` (cycling ``messages``), each with a fresh stamp."""
    published: dict[int, float] = {}
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index / rate_hz - time.monotonic()))
        stamp = replay.new_stamp()
        published[stamp] = replay.publish_restamped(messages[index % len(messages)], stamp)
        if index % 10 == 0:
            alive()
    return published


def settle(replay: ReplayNode, published: dict, nodes: list[str], before: dict, quiet_s: float, timeout: float,
           alive) -> None:
    """Wait until every inference node has received and processed or dropped every frame sent,
    or nothing arrived for ``quiet_s`` (frames lost), or ``timeout`` passed."""
    last_send = max(published.values(), default=time.monotonic())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = replay.counter_snapshot()
        if all(_accounted(before.get(n, (0, 0, 0)), after.get(n, (0, 0, 0)), len(published)) for n in nodes):
            time.sleep(0.2)  # outputs of the last frame travel beside its stats
            return
        if time.monotonic() - max(last_send, replay.last_arrival()) > quiet_s:
            return
        alive()
        time.sleep(0.05)


def _accounted(before: tuple, after: tuple, sent: int) -> bool:
    received, processed, dropped = (a - b for a, b in zip(after, before))
    return received >= sent and processed + dropped >= received


def run_outcome(replay: ReplayNode, published: dict[int, float], topics, nodes: list[str], before: dict,
                after: dict) -> dict:
    """Figures of one run.

    Returns:
        ``published``; ``per_output`` (topic → frames answered on it); ``answered`` (frames with
        every output); ``latencies_ms`` (stamp → send to last output); ``latency_ms`` summary;
        ``input_fps``/``output_fps``; ``jitter_ms`` (std of the intervals between answered
        frames); ``nodes`` (node → received/processed/dropped/lost in this run, from its
        counters); ``dropped`` (sum of the nodes' drops); ``not_received`` (most frames a node
        never received: replaced in its keep-last-1 queue, or lost on the way); ``silent_nodes``
        (nodes that received none of the frames: the stream never reached them).
    """
    with replay.condition:
        first = {t: dict(replay.first_arrival[t]) for t in topics}
    per_output = {t: sum(1 for s in published if s in first[t]) for t in topics}
    done = {s: max(first[t][s] for t in topics) for s in published if all(s in first[t] for t in topics)}
    latencies = {s: (t_done - published[s]) * 1e3 for s, t_done in done.items()}
    completion = sorted(done.values())
    intervals = np.diff(completion) * 1e3
    node_counts = {}
    for node in nodes:
        received, processed, dropped = (a - b for a, b in zip(after.get(node, (0, 0, 0)), before.get(node, (0, 0, 0))))
        # The camera queue keeps the last frame: while the node's executor is busy or starved, DDS
        # replaces unread frames before the callback sees them (newest frame wins one step earlier).
        node_counts[node] = {"received": received, "processed": processed, "dropped": dropped,
                             "not_received": max(0, len(published) - received)}
    return {
        "published": len(published),
        "per_output": per_output,
        "answered": len(done),
        "latencies_ms": latencies,
        "latency_ms": latency_summary(list(latencies.values())),
        "input_fps": events_per_second(sorted(published.values())),
        "output_fps": events_per_second(completion),
        "jitter_ms": float(np.std(intervals)) if intervals.size >= 2 else math.nan,
        "nodes": node_counts,
        "dropped": sum(c["dropped"] for c in node_counts.values()),
        "not_received": max((c["not_received"] for c in node_counts.values()), default=0),
        "silent_nodes": [n for n, c in node_counts.items() if published and c["received"] == 0],
    }


def fixed_rate_run(replay: ReplayNode, messages, rate_hz: float, seconds: float, topics, nodes, sampler, quiet_s: float,
                   alive) -> dict:
    """One fixed-rate stream of ``seconds``: :func:`run_outcome` plus CPU use (% of one core, while
    sending) and RSS of each graph process."""
    from mtl_perception.replay.process_sampler import cpu_percent

    before = replay.counter_snapshot()
    cpu_start = sampler.cpu_seconds()
    published = run_stream(replay, messages, rate_hz, max(2, round(rate_hz * seconds)), alive)
    cpu = cpu_percent(cpu_start, sampler.cpu_seconds())
    settle(replay, published, nodes, before, quiet_s, 60.0, alive)
    outcome = run_outcome(replay, published, topics, nodes, before, replay.counter_snapshot())
    outcome.pop("latencies_ms")
    return {"rate_hz": rate_hz, **outcome, "cpu_percent": cpu, "rss_mb": sampler.rss_mb()}


def peak_throughput(replay: ReplayNode, messages, topics, nodes, estimate_fps: float, quiet_s: float, alive,
                    trial_seconds: float = 4.0, min_frames: int = 20, steps: int = 5) -> PeakSearch:
    """:func:`search_peak_rate` on the live graph between ``estimate_fps`` / 4 and × 2."""
    def trial(rate_hz: float) -> RateTrial:
        before = replay.counter_snapshot()
        published = run_stream(replay, messages, rate_hz, max(min_frames, round(rate_hz * trial_seconds)), alive)
        settle(replay, published, nodes, before, quiet_s, 60.0, alive)
        outcome = run_outcome(replay, published, topics, nodes, before, replay.counter_snapshot())
        result = RateTrial(rate_hz, outcome["published"], outcome["answered"], outcome["input_fps"], outcome["output_fps"])
        print(f"[replay]   {rate_hz:6.2f} Hz: {result.answered}/{result.published} answered, "
              f"{result.output_fps:.2f} fps out -> {'pass' if result.passed else 'fail'}", flush=True)
        return result

    return search_peak_rate(trial, estimate_fps / 4, estimate_fps * 2, steps)


def capture_overlays(replay: ReplayNode, namespace: str, messages: list, directory: Path, timeout: float) -> list[Path]:
    """Subscribe to ``overlay`` only now (it is rendered only while subscribed, so the measured
    runs did not pay for it), send ``messages`` with fresh stamps and save each overlay as PNG."""
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    from mtl_perception.image_msg_codec import image_to_array, to_rgb
    from mtl_perception.replay.replay_messages import deserialize

    replay.subscribe("overlay")
    deadline = time.monotonic() + 30.0
    while replay.node.count_publishers(f"/{namespace}/overlay") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # let the publishers see the new subscription
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for index, message in enumerate(messages):
        stamp = replay.new_stamp()
        replay.publish_restamped(message, stamp)
        if not replay.wait_answered(stamp, ["overlay"], timeout, lambda: None):
            continue
        with replay.condition:
            raw = next(a.raw for a in reversed(replay.received["overlay"]) if a.stamp == stamp)
        overlay = deserialize(raw, Image)
        path = directory / f"overlay_{index:02d}.png"
        PILImage.fromarray(to_rgb(image_to_array(overlay), overlay.encoding)).save(path)
        paths.append(path)
    return paths
