"""predictor_settings: a node's parameter dict → the Predictor the node and the replay baseline both build."""

from __future__ import annotations

import pytest

from node_fixtures import DET_NAMES, make_tiny_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


def test_parameters_set_engine_size_threads_and_postprocess(checkpoints):
    import torch

    from mtl_perception.predictor_settings import predictor_from_parameters

    before = torch.get_num_threads()
    try:
        allow = [DET_NAMES[-1]]
        predictor = predictor_from_parameters({"checkpoint": str(checkpoints["multitask"]), "device": "cpu",
                                               "backend": "torch", "input_height": 64, "input_width": 96,
                                               "score_threshold": 0.55, "nms_iou": 0.25, "max_detections": 1500,
                                               "class_allowlist": allow, "cpu_threads": 1})
        assert predictor.backend == "torch" and predictor.input_size == (64, 96) and torch.get_num_threads() == 1
        params = predictor.detection_params
        assert (params.score_threshold, params.nms_iou, params.max_detections) == (0.55, 0.25, 1500)
        assert params.pre_nms_top_k == 1500  # raised with max_detections, as the node does
        assert params.class_allowlist == (len(DET_NAMES) - 1,)
    finally:
        torch.set_num_threads(before)


def test_bad_parameters_are_refused_with_the_reason(checkpoints):
    from mtl_perception.predictor_settings import predictor_from_parameters

    base = {"checkpoint": str(checkpoints["multitask"]), "device": "cpu", "backend": "torch"}
    with pytest.raises(ValueError, match="input_height=64 and input_width=0"):
        predictor_from_parameters({**base, "input_height": 64})
    with pytest.raises(ValueError, match=r"unknown detection class name\(s\) \['zebra'\]"):
        predictor_from_parameters({**base, "class_allowlist": ["zebra"]})
    with pytest.raises(ValueError, match="'checkpoint' is empty"):
        predictor_from_parameters({"device": "cpu"})


def test_settings_fill_the_nodes_defaults():
    from mtl_perception.predictor_settings import settings

    values = settings({"checkpoint": "a.pt", "max_detections": 7})
    assert values["max_detections"] == 7 and values["score_threshold"] == 0.3 and values["nms_iou"] == 0.45
    assert values["class_allowlist"] == [] and values["backend"] == "auto" and values["input_height"] == 0
