"""The engines table's verdicts (mtl_perception.bench_engines), on hand-built bench reports."""

from __future__ import annotations

from mtl_perception.bench import variant_plan
from mtl_perception.bench_engines import engine_targets, engines_markdown


def _side(p50: float, network: float, accuracy: dict | None = None) -> dict:
    return {"latency_ms": {"p50": p50}, "network_ms": {"p50": network, "p90": network + 1}, "precision": "fp32",
            "device": "cpu", "execution_provider": "CPUExecutionProvider", "memory_mb": 50.0, "file_mb": 5.0,
            "accuracy": accuracy}


def _variant(engine: str, precision: str, mode: str, m: dict, n: dict) -> dict:
    return {"engine": engine, "precision": precision, "mode": mode, "status": "ok", "reason": None,
            "results": {"multitask": {**m, "precision": precision}, "naive": {**n, "precision": precision}},
            "ratios": {"speed": n["latency_ms"]["p50"] / m["latency_ms"]["p50"]}}


def _report() -> dict:
    fp32 = {"seg_miou": 0.6281, "tree_ap50": 0.3025}
    return {"budget": {"line": "Budget: test", "torch_threads": 1}, "variants": [
        _variant("torch", "fp32", "eager", _side(40.0, 36.0, fp32), _side(80.0, 75.0, fp32)),
        _variant("onnxruntime", "fp32", "onnxruntime", _side(16.0, 11.0, fp32), _side(25.0, 18.0, fp32)),
        # int8: multitask mIoU -1.5 points (outside 1), AP50 -1.0 (inside 2); naive exactly at the limits
        _variant("int8", "int8", "onnxruntime", _side(12.5, 6.0, {"seg_miou": 0.6131, "tree_ap50": 0.2925}),
                 _side(23.0, 13.0, {"seg_miou": 0.6181, "tree_ap50": 0.2825})),
    ]}


def test_targets_judge_speed_ratios_and_accuracy_points_against_the_reference_engine():
    targets = {t["key"]: t for t in engine_targets(_report())}
    assert targets["ort_vs_torch"]["value"] == 2.5 and targets["ort_vs_torch"]["status"] == "PASS"  # 40 / 16
    assert targets["int8_vs_ort"]["value"] == 1.28 and targets["int8_vs_ort"]["status"] == "FAIL"  # 16 / 12.5 < 1.3
    assert round(targets["int8_miou_multitask"]["value"], 6) == -1.5
    assert targets["int8_miou_multitask"]["status"] == "FAIL"
    assert round(targets["int8_ap50_multitask"]["value"], 6) == -1.0
    assert targets["int8_ap50_multitask"]["status"] == "PASS"
    assert targets["int8_miou_naive"]["status"] == "PASS" and targets["int8_ap50_naive"]["status"] == "PASS"


def test_missing_variants_are_not_applicable_and_say_which_they_need():
    report = _report()
    report["variants"] = report["variants"][:1]
    targets = {t["key"]: t for t in engine_targets(report)}
    assert targets["ort_vs_torch"]["status"] == "n/a" and "onnxruntime" in targets["ort_vs_torch"]["detail"]
    assert targets["int8_miou_naive"]["status"] == "n/a"


def test_markdown_rows_and_the_variant_order():
    text = engines_markdown(_report())
    assert "| onnxruntime | CPUExecutionProvider | fp32 | 11.0 / 12.0 | 18.0 / 19.0 | 16.0 / 25.0 | 1.56x |" in text
    assert "| int8 int8 | 61.31 / 61.81 | 29.25 / 28.25 |" in text
    assert "- **FAIL** int8 >= 1.3x faster than onnxruntime fp32" in text
    assert variant_plan(["int8", "torch", "onnxruntime"], ["fp32", "fp16"], ["eager"]) == [
        ("int8", "int8", "onnxruntime"), ("torch", "fp32", "eager"), ("torch", "fp16", "eager"),
        ("onnxruntime", "fp32", "onnxruntime")]
