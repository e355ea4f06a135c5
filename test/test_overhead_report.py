"""The node-overhead figures of a replay report: equal work, two baselines, the ratio's verdicts, the stages."""

from __future__ import annotations

import math

import pytest


def test_two_baselines_give_their_mean_and_say_when_the_machine_was_not_steady():
    from mtl_perception.replay.replay_report import combine_baselines

    def run(p50):
        return {"predictor_p50_ms": p50, "stages_ms": {"network": [p50 - 10.0] * 3}, "frames": 3}

    steady = combine_baselines({"before": run(50.0), "after": run(54.0)})
    assert steady["predictor_p50_ms"] == 52.0 and steady["steady"] and steady["spread"] == pytest.approx(0.08)
    assert steady["stages_ms_p50"]["network"] == 42.0
    unsteady = combine_baselines({"before": run(50.0), "after": run(56.0)})  # 12% apart
    assert not unsteady["steady"] and unsteady["before_p50_ms"] == 50.0 and unsteady["after_p50_ms"] == 56.0


def test_a_ratio_below_one_is_a_measurement_error_with_both_figures_never_a_gain():
    from mtl_perception.replay.replay_report import overhead_summary, overhead_text

    below = overhead_summary(74.6, {"predictor_p50_ms": 88.6, "frames": 90})
    assert not below["valid"] and not below["target_met"]
    text = overhead_text(below)
    assert text.startswith("MEASUREMENT ERROR") and "74.6 ms" in text and "88.6 ms" in text and "not a gain" in text
    ok = overhead_summary(61.6, {"predictor_p50_ms": 56.0, "frames": 90})
    assert ok["valid"] and ok["target_met"] and overhead_text(ok) == "1.10x (PASS: target ≤ 1.10x)"
    over = overhead_summary(70.3, {"predictor_p50_ms": 56.4, "frames": 90})
    assert overhead_text(over) == "1.25x (FAIL: target ≤ 1.10x)"


def test_compare_flags_a_report_whose_ratio_is_below_one():
    from mtl_perception.replay.replay_report import compare_markdown, compare_reports, overhead_summary

    def report(latency, predictor):
        return {"latency_ms": {"p50": latency}, "inference_ms_per_frame": 1.0, "memory": {"inference_rss_mb": 1.0},
                "overhead": overhead_summary(latency, {"predictor_p50_ms": predictor, "frames": 4}), "size_mb": 1.0,
                "peak_throughput": None, "fixed_rate": [], "complete": True, "budget": {"line": "x"}, "device": "cpu",
                "bag": "b", "mode": "lockstep", "inference_nodes": ["n"]}

    text = compare_markdown(compare_reports(report(74.6, 88.6), report(156.6, 138.8)))
    row = next(line for line in text.splitlines() if line.startswith("| node overhead"))
    assert "MEASUREMENT ERROR: end to end 74.6 ms < bare Predictor 88.6 ms" in row
    assert "1.13x (FAIL: target ≤ 1.10x)" in row
    assert "Node overhead target: ≤ 1.10x for both graphs: FAIL" in text


def _stats(node, stamp_ns, received_ns, published_ns, **stages):
    from mtl_perception.msg import InferenceStats

    message = InferenceStats(node_name=f"/replay/{node}", receive_time_ns=received_ns, publish_time_ns=published_ns, **stages)
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return (0.0, message)


def test_stages_from_send_to_answer_add_up_and_a_gap_is_flagged():
    from mtl_perception.replay.replay_report import stage_breakdown

    # Frame 1 sent at t=100.000 s; the node's callback at 100.002, worker at +0.5 ms, stages below,
    # last output published at 100.0725 and received by the replay at 100.0735: every ms accounted for.
    stages = dict(queue_ms=0.5, decode_ms=1.0, resize_ms=4.0, inference_ms=50.0, outputs_ms=10.0, publish_ms=5.0)
    stats = [_stats("multitask_node", 1, 100_002_000_000, 100_072_500_000, **stages),
             # frame 2: the same stages, but 20 ms of the node's time is in none of them
             _stats("multitask_node", 2, 200_002_000_000, 200_092_500_000, **stages)]
    published = {1: 100.0, 2: 200.0}
    arrivals = {"segmentation": {1: 100.0735, 2: 200.0935}, "detections": {1: 100.0730, 2: 200.0930}}
    [one] = stage_breakdown(stats[:1], published, arrivals, {"multitask_node": ["segmentation", "detections"]}).values()
    assert one["mean"]["transport_in"] == pytest.approx(2.0) and one["mean"]["transport_out"] == pytest.approx(1.0)
    assert one["mean"]["end_to_end"] == pytest.approx(73.5) and one["sum_of_means_ms"] == pytest.approx(73.5)
    assert one["adds_up"] and one["gap"] == pytest.approx(0.0, abs=1e-9)
    [both] = stage_breakdown(stats, published, arrivals, {"multitask_node": ["segmentation", "detections"]}).values()
    # mean end to end (73.5 + 93.5) / 2 = 83.5; stages sum to 73.5: 10 ms (12%) in no stage
    assert both["frames"] == 2 and both["sum_of_means_ms"] == pytest.approx(73.5)
    assert both["gap"] == pytest.approx(10.0 / 83.5) and not both["adds_up"]
    assert not math.isnan(both["p50"]["network"])


def test_a_baseline_with_other_postprocess_options_than_the_node_is_refused():
    from mtl_perception.replay.predictor_baseline import UnequalWorkError, check_equal_work

    node = {"checkpoint": "/share/a.pt", "score_threshold": 0.3, "nms_iou": 0.45, "max_detections": 100,
            "class_allowlist": None, "input_height": 0, "input_width": 0, "backend": "onnxruntime", "cpu_threads": 1}
    check_equal_work({"multitask_node": node}, {"multitask_node": {**node, "class_allowlist": []}})  # unset == empty
    with pytest.raises(UnequalWorkError, match=r"multitask_node.max_detections: node 100, baseline 5"):
        check_equal_work({"multitask_node": node}, {"multitask_node": {**node, "max_detections": 5}})
    with pytest.raises(UnequalWorkError, match=r"class_allowlist: node \[\], baseline \['car'\]"):
        check_equal_work({"multitask_node": node}, {"multitask_node": {**node, "class_allowlist": ["car"]}})
    with pytest.raises(UnequalWorkError, match=r"backend: node 'onnxruntime', baseline 'torch'"):
        check_equal_work({"multitask_node": node}, {"multitask_node": {**node, "backend": "torch"}})


@pytest.mark.parametrize("kind", ["image", "detections", "stats"])
def test_the_replay_reads_the_stamp_from_the_cdr_bytes_as_deserialising_does(kind):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.msg import InferenceStats
    from mtl_perception.replay.replay_messages import cdr_stamp_ns

    message = {"image": Image(height=2, width=3, encoding="mono8", step=3, data=bytes(6)),
               "detections": Detection2DArray(), "stats": InferenceStats(node_name="/x")}[kind]
    message.header.stamp.sec, message.header.stamp.nanosec = 1_700_000_123, 987_654_321
    message.header.frame_id = "camera_optical"
    assert cdr_stamp_ns(serialize_message(message)) == 1_700_000_123 * 10**9 + 987_654_321
    assert cdr_stamp_ns(b"\x00\x07" + bytes(20)) is None  # not plain CDR: the caller deserialises


def test_a_restamped_cdr_message_is_the_recorded_one_with_only_the_stamp_changed():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from mtl_perception.replay.replay_messages import cdr_with_stamp

    message = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
    message.header.stamp.sec, message.header.stamp.nanosec = 17, 5
    message.header.frame_id = "cam"
    raw = serialize_message(message)
    patched = cdr_with_stamp(raw, 2_000_000_123)
    assert len(patched) == len(raw) and patched[12:] == raw[12:]
    back = deserialize_message(patched, Image)
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (2, 123)
    assert (back.header.frame_id, back.height, back.width, bytes(back.data)) == ("cam", 2, 3, bytes(range(18)))
    with pytest.raises(ValueError, match="not a plain-CDR message"):
        cdr_with_stamp(b"\x00\x07" + bytes(20), 1)


def test_lockstep_passes_cover_the_asked_samples():
    from mtl_perception.replay.replay_runs import lockstep_passes

    # 14 frames, 60 samples: 5 passes (70); a long bag needs one; 0 asks for one pass
    assert [lockstep_passes(14, 60), lockstep_passes(60, 60), lockstep_passes(61, 60), lockstep_passes(6, 0),
            lockstep_passes(0, 60), lockstep_passes(6, 12), lockstep_passes(6, 13)] == [5, 1, 1, 1, 1, 2, 3]
