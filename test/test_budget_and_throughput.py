"""Compute budgets, the peak-throughput search and the comparison's gains: pure logic, no ROS."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from mtl_perception.graphs.budget import format_cpu_list, parse_cpu_list, plan_budget
from mtl_perception.graphs.graph import GraphProcesses, node_overrides
from mtl_perception.replay.process_sampler import cpu_percent
from mtl_perception.replay.throughput import RateTrial, events_per_second, rate_passes, search_peak_rate


def test_cpu_lists_in_the_proc_format():
    assert parse_cpu_list("0-2,5") == (0, 1, 2, 5)
    assert parse_cpu_list("3") == (3,)
    assert format_cpu_list((5, 0, 1, 2)) == "0-2,5"
    assert format_cpu_list((1, 3)) == "1,3"
    for bad in ("", "a", "3-1", "1;2"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


def test_shared_budget_keeps_the_first_core_for_the_replay():
    two = plan_budget("shared", available=(0, 1))
    assert (two.graph_cpus, two.replay_cpus, two.threads) == ((1,), (0,), 1)
    assert "CPU 1, 1 torch thread(s)" in two.describe() and "replay/recorder/sampler on CPU 0" in two.describe()
    four = plan_budget("shared", available=(0, 1, 2, 3))
    assert (four.graph_cpus, four.replay_cpus, four.threads) == ((1, 2, 3), (0,), 3)
    one = plan_budget("shared", available=(0,))
    assert (one.graph_cpus, one.replay_cpus) == ((0,), (0,)) and "no spare core" in one.describe()
    chosen = plan_budget("shared", graph_cpus="2-3", threads=1, available=(0, 1, 2, 3))
    assert (chosen.graph_cpus, chosen.replay_cpus, chosen.threads) == ((2, 3), (0, 1), 1)
    with pytest.raises(ValueError, match="not available"):
        plan_budget("shared", graph_cpus="7", available=(0, 1))
    with pytest.raises(ValueError, match="budget must be"):
        plan_budget("equal")


def test_per_network_budget_pins_nothing_and_says_it_is_unequal():
    budget = plan_budget("per-network", available=(0, 1))
    assert budget.graph_cpus is None and budget.replay_cpus is None and budget.threads is None
    assert "NOT an equal budget" in budget.describe()
    assert budget.node_arguments() == {}


def test_cuda_n_becomes_one_visible_gpu_for_every_network():
    budget = plan_budget("shared", device="cuda:1", available=(0, 1))
    assert budget.node_arguments() == {"cpu_threads": 1, "device": "cuda"}
    assert budget.environment({"A": "b"}) == {"A": "b", "CUDA_VISIBLE_DEVICES": "1"}
    assert "GPU cuda:1" in budget.describe()
    with pytest.raises(ValueError, match="cuda:N"):
        plan_budget("shared", device="gpu0")


def test_graph_arguments_reach_the_nodes_that_take_them():
    overrides = node_overrides("naive", {"input_transport": "compressed", "reliability": "reliable", "cpu_threads": 2})
    expected = {"input_transport": "compressed", "reliability": "reliable", "cpu_threads": 2}
    assert overrides["segmentation_node"] == overrides["detection_node"] == expected
    assert overrides["overlay_node"] == {"input_transport": "compressed", "reliability": "reliable"}


def _capacity_trial(capacity: float, calls: list):
    """A graph that answers every frame up to ``capacity`` Hz and ``capacity`` frames/s beyond."""
    def trial(rate: float) -> RateTrial:
        calls.append(rate)
        answered = 100 if rate <= capacity else int(100 * capacity / rate)
        return RateTrial(rate, 100, answered, rate, min(rate, capacity))
    return trial


def test_peak_search_bisects_to_the_known_capacity():
    calls: list[float] = []
    search = search_peak_rate(_capacity_trial(23.7, calls), low=2.0, high=60.0, steps=6)
    # By hand: above 23.7 Hz a fraction 23.7 / rate is answered, so ≤ 5 % lost holds up to
    # 23.7 / 0.95 = 24.95 Hz. 2 passes; 31 fails (76 answered); 16.5 passes; 23.75 passes (99);
    # 27.375 fails (86); 25.5625 fails (92); 24.65625 passes (96). Its output is the capacity.
    assert calls == [2.0, 31.0, 16.5, 23.75, 27.375, 25.5625, 24.65625]
    assert search.peak.rate_hz == 24.65625 and search.peak_fps == 23.7
    assert not search.at_bound and search.as_dict()["trials"][1]["passed"] is False


def test_peak_search_reports_a_capacity_outside_the_bounds():
    calls: list[float] = []
    above = search_peak_rate(_capacity_trial(500.0, calls), low=10.0, high=50.0, steps=2)
    assert calls == [10.0, 30.0, 40.0, 50.0] and above.at_bound and above.peak.rate_hz == 50.0
    calls = []
    below = search_peak_rate(_capacity_trial(1.0, calls), low=10.0, high=50.0, steps=3)
    # 10, 5, 2.5 and 1.25 Hz all lose more than 5 % (80 of 100 answered at 1.25 Hz): no peak.
    assert calls == [10.0, 5.0, 2.5, 1.25]
    assert below.peak is None and math.isnan(below.peak_fps) and below.as_dict()["below_low"]
    assert below.low == 1.25
    with pytest.raises(ValueError):
        search_peak_rate(_capacity_trial(1.0, []), low=5.0, high=5.0)


def test_peak_search_looks_below_a_failing_low_bound():
    calls: list[float] = []
    search = search_peak_rate(_capacity_trial(3.0, calls), low=10.0, high=50.0, steps=2)
    # By hand: 10 fails (30 answered), 5 fails (60), 2.5 passes; bisecting 2.5..5: 3.75 fails
    # (80 answered), 3.125 passes (96 answered, 3.0 fps out >= 0.9 x 3.125). High is never tried.
    assert calls == [10.0, 5.0, 2.5, 3.75, 3.125]
    assert search.peak.rate_hz == 3.125 and search.peak_fps == 3.0 and not search.at_bound
    assert search.low == 2.5 and not search.as_dict()["below_low"]


def test_a_rate_passes_with_at_most_five_percent_lost_and_ninety_percent_of_the_rate():
    assert rate_passes(100, 95, 20.0, 18.0)
    assert not rate_passes(100, 94, 20.0, 20.0)
    assert not rate_passes(100, 100, 20.0, 17.9)
    assert not rate_passes(0, 0, 20.0, 20.0)
    assert not rate_passes(10, 10, 20.0, math.nan)


def test_rates_and_cpu_use_from_times():
    assert events_per_second([0.0, 0.5, 1.0]) == 2.0
    assert math.isnan(events_per_second([3.0]))
    start, end = (10.0, {"a": 1.0, "b": 5.0}), (12.0, {"a": 2.5, "b": 5.5})
    assert cpu_percent(start, end) == {"a": 75.0, "b": 25.0}


def _report(latency, peak, rss, size, answered):
    from mtl_perception.replay.replay_report import overhead_summary

    run = {"rate_hz": 10.0, "published": 60, "answered": answered, "per_output": {}, "nodes": {}, "output_fps": 9.0,
           "latency_ms": {"p50": latency, "p99": 2 * latency}}
    return {"latency_ms": {"p50": latency}, "inference_ms_per_frame": latency / 2, "memory": {"inference_rss_mb": rss},
            "overhead": overhead_summary(latency, {"predictor_p50_ms": latency * 0.75, "frames": 6}),
            "size_mb": size, "peak_throughput": {"peak_fps": peak}, "fixed_rate": [run], "complete": True, "budget": {"line": "x"},
            "device": "cpu", "bag": "b", "mode": "lockstep", "inference_nodes": ["multitask_node"]}


def test_comparison_gains_point_the_same_way_for_costs_and_rates():
    from mtl_perception.replay.replay_report import compare_markdown, compare_reports

    naive = _report(120.0, 8.0, 1800.0, 20.0, 30)
    naive["inference_nodes"] = ["segmentation_node", "detection_node"]
    naive["fixed_rate"][0]["nodes"] = {"segmentation_node": {"processed": 40}, "detection_node": {"processed": 38}}
    table = compare_reports(_report(60.0, 20.0, 900.0, 12.5, 58), naive)
    ratios = table["ratios"]
    assert (ratios["speed"], ratios["throughput"], ratios["memory"], ratios["size"]) == (2.0, 2.5, 2.0, 1.6)
    assert ratios["predictor"] == 90.0 / 45.0
    assert ratios["fixed_rate"]["10"] == {"answered": 58 / 30, "latency_p50": 2.0, "latency_p99": 2.0}
    assert "segmentation_node answered 40, detection_node answered 38" in table["consumer"][0]
    text = compare_markdown(table)
    assert "| peak throughput (frames/s with every output) | 20.0 | 8.0 | 2.50x |" in text and "Budget: x." in text
    # 60 / 45 and 120 / 90: both 1.33x, over the 1.10x target
    assert ("| node overhead (end-to-end p50 ÷ bare Predictor of the same engine and settings) | "
            "1.33x (FAIL: target ≤ 1.10x) | 1.33x (FAIL: target ≤ 1.10x) | |") in text
    assert "Node overhead target: ≤ 1.10x for both graphs: FAIL" in text


def test_stopping_a_graph_removes_its_scratch_folder(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "overrides.yaml").write_text("{}")
    processes = GraphProcesses({"sleeper": [sys.executable, "-c", "import time; time.sleep(60)"]}, scratch=scratch)
    assert processes.stop(sigint_timeout=2.0)["sleeper"] != 0
    assert not scratch.exists()


def test_the_graph_cli_removes_its_overrides_when_signalled(tmp_path):
    """SIGTERM to `python -m mtl_perception.graphs.graph` stops the nodes and leaves no overrides file behind."""
    from node_fixtures import make_tiny_checkpoints

    checkpoints = make_tiny_checkpoints(tmp_path / "checkpoints")
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "mtl_perception.graphs.graph", "multitask", "--checkpoint",
                                str(checkpoints["multitask"]), "--device", "cpu", "--log-dir", str(tmp_path / "logs")],
                               env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE, text=True)
    try:
        assert "[graph] multitask" in process.stdout.readline()
        [scratch] = list(temp.glob("mtl_graph_*"))
        assert list(scratch.glob("*.yaml"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert list(temp.iterdir()) == []


def test_the_graph_cli_exit_codes_for_bad_input(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "mtl_perception.graphs.graph", "multitask", "--checkpoint",
                              str(tmp_path / "none.pt")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "none.pt is not a file" in missing.stderr
    bad_budget = subprocess.run([sys.executable, "-m", "mtl_perception.graphs.graph", "multitask", "--budget", "equal"],
                                capture_output=True, text=True, timeout=60)
    assert bad_budget.returncode == 2




class _Outputs:
    """What run_outcome reads of a ReplayNode: first arrival per topic and stamp, under a lock."""

    def __init__(self, first_arrival):
        import threading

        self.condition = threading.Condition()
        self.first_arrival = first_arrival


def test_run_outcome_counts_answers_drops_and_frames_a_node_never_received():
    from mtl_perception.replay.replay_runs import run_outcome

    published = {1: 0.0, 2: 0.1, 3: 0.2}
    outputs = _Outputs({"segmentation": {1: 0.05, 2: 0.2}, "detections": {1: 0.06, 3: 0.3}})
    before = {"segmentation_node": (5, 5, 0), "detection_node": (4, 4, 0)}
    # segmentation_node got all 3, answered 2, dropped 1; detection_node got 2 of 3 and answered both
    after = {"segmentation_node": (8, 7, 1), "detection_node": (6, 6, 0)}
    topics, nodes = ["segmentation", "detections"], ["segmentation_node", "detection_node"]
    outcome = run_outcome(outputs, published, topics, nodes, before, after)
    assert outcome["per_output"] == {"segmentation": 2, "detections": 2} and outcome["answered"] == 1
    assert outcome["latencies_ms"] == {1: pytest.approx(60.0)}
    assert outcome["nodes"]["segmentation_node"] == {"received": 3, "processed": 2, "dropped": 1, "not_received": 0}
    assert outcome["nodes"]["detection_node"] == {"received": 2, "processed": 2, "dropped": 0, "not_received": 1}
    assert (outcome["dropped"], outcome["not_received"], outcome["silent_nodes"]) == (1, 1, [])
    assert outcome["input_fps"] == pytest.approx(10.0) and math.isnan(outcome["output_fps"])
    after["detection_node"] = (4, 4, 0)  # a node the stream never reached
    assert run_outcome(outputs, published, topics, nodes, before, after)["silent_nodes"] == ["detection_node"]
