"""mtl-eval: evaluate() plumbing against the metrics, stub predictors with known answers, the CLI."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import ConcatDataset

from node_fixtures import DET_NAMES, SEG_NAMES, make_tiny_checkpoints

from mtl_perception.checkpoint import make_checkpoint, save_checkpoint
from mtl_perception.data import CocoDetection, SegmentationFolder
from mtl_perception.evaluation import ClassMismatchError, EvaluationError, evaluate
from mtl_perception.evaluation.cli import main
from mtl_perception.models import ModelConfig, build_model
from mtl_perception.postprocess import DetectionParams
from mtl_perception.predictor import Predictor, StageTimings

H, W = 24, 32
SEG_CLASS_MAP = {"name": "tiny_seg", "segmentation": SEG_NAMES}
IGNORED_PIXELS_PER_MASK = 4 * 5


def random_image(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A seg folder (3 images, masks with an ignored block) and a COCO detection set (3 images)."""
    root = tmp_path_factory.mktemp("eval_data")
    (root / "seg_images").mkdir()
    (root / "seg_masks").mkdir()
    for k in range(3):
        Image.fromarray(random_image(k)).save(root / "seg_images" / f"s{k}.png")
        mask = np.random.default_rng(10 + k).integers(0, len(SEG_NAMES), (H, W)).astype(np.uint8)
        mask[:4, :5] = 255
        Image.fromarray(mask, mode="L").save(root / "seg_masks" / f"s{k}.png")
    (root / "det_images").mkdir()
    for k in range(3):
        Image.fromarray(random_image(100 + k)).save(root / "det_images" / f"d{k}.png")
    coco = {
        "images": [{"id": k + 1, "file_name": f"d{k}.png", "width": W, "height": H} for k in range(3)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 8, 12], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [14, 4, 12, 9], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 15], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 6, 6], "iscrowd": 1},  # difficult
            {"id": 5, "image_id": 3, "category_id": 1, "bbox": [20, 10, 10, 12], "iscrowd": 0},
        ],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    return root


def seg_dataset(data_dir, class_map=SEG_CLASS_MAP):
    return SegmentationFolder(data_dir / "seg_images", data_dir / "seg_masks", class_map)


def det_dataset(data_dir):
    return CocoDetection(data_dir / "det_images", data_dir / "instances.json", crowd="difficult")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return make_tiny_checkpoints(tmp_path_factory.mktemp("eval_ckpt"))


@pytest.fixture(scope="module")
def multitask_predictor(checkpoints):
    return Predictor(checkpoints["multitask"], device="cpu", detection=DetectionParams(score_threshold=0.01))


# -- a stub of the Predictor interface that answers with (a variant of) the ground truth ---------


class GroundTruthPredictor:
    """Predicts each image's labels, found by the image's pixels; ``drop`` filters GT boxes."""

    def __init__(self, datasets, tasks, drop=lambda label, difficult: False):
        self.tasks = tuple(tasks)
        self.class_names = {"segmentation": SEG_NAMES, "detection": DET_NAMES}
        self.answers = {}
        for dataset in datasets:
            for index in range(len(dataset)):
                image, target = dataset[index]
                self.answers[image.permute(1, 2, 0).numpy().tobytes()] = target
        self.drop = drop
        self.calls = 0

    def predict(self, image):
        target = self.answers[image.tobytes()]
        self.calls += 1
        mask = None
        if "segmentation" in self.tasks:
            mask = target["mask"].numpy().copy() if "mask" in target else np.zeros(image.shape[:2], np.uint8)
            mask[mask == 255] = 0
        boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        if "detection" in self.tasks and "boxes" in target:
            difficult = target.get("difficult", torch.zeros(len(target["labels"]), dtype=torch.bool)).numpy()
            keep = np.array([not self.drop(int(lab), bool(d)) for lab, d in zip(target["labels"], difficult)], bool)
            boxes = target["boxes"].numpy()[keep] if keep.size else boxes
            labels = target["labels"].numpy()[keep] if keep.size else labels
        return SimpleNamespace(mask=mask, boxes=boxes, scores=np.ones(len(boxes), np.float32), labels=labels,
                               timings=StageTimings(total_ms=10.0 * self.calls))


def test_ground_truth_answers_score_perfectly(data_dir):
    datasets = [seg_dataset(data_dir), det_dataset(data_dir)]
    stub = GroundTruthPredictor(datasets, ["segmentation", "detection"])
    result = evaluate(stub, ConcatDataset(datasets), progress=False)
    assert result["seg_miou"] == 1.0 and result["seg_pixel_accuracy"] == 1.0
    assert result["seg_iou"] == {"background": 1.0, "road": 1.0, "building": 1.0}
    assert result["seg_num_pixels"] == 3 * (H * W - IGNORED_PIXELS_PER_MASK)  # 255 ignored
    assert result["det_voc_ap50"] == 1.0 and result["det_voc07_ap50"] == 1.0
    assert result["det_coco_map"] == pytest.approx(1.0) and result["det_coco_ap75"] == pytest.approx(1.0)
    assert result["det_per_class_ap50"] == {"person": 1.0, "car": 1.0}
    assert result["det_num_ground_truth"] == 5  # difficult box included
    assert result["score"] == 1.0
    assert (result["num_images"], result["seg_num_images"], result["det_num_images"]) == (6, 3, 3)
    assert (result["num_unlabelled"], result["num_skipped"]) == (0, 0)
    # Latencies 10, 20, ..., 60 ms from the stub's timings.
    assert result["latency_ms"]["count"] == 6
    assert result["latency_ms"]["p50"] == pytest.approx(35.0)
    assert result["latency_ms"]["p90"] == pytest.approx(55.0)
    json.dumps(result, allow_nan=False)


def test_missed_class_and_difficult_boxes(data_dir):
    dataset = det_dataset(data_dir)
    # Missing only the difficult box costs nothing (VOC devkit rule)...
    no_difficult = GroundTruthPredictor([dataset], ["detection"], drop=lambda label, difficult: difficult)
    det = evaluate(no_difficult, dataset, progress=False)
    assert det["det_voc_ap50"] == 1.0 and det["det_coco_map"] == pytest.approx(1.0)
    assert det["det_num_detections"] == 4
    # ...missing every car gives car AP 0, person AP 1.
    no_cars = GroundTruthPredictor([dataset], ["detection"], drop=lambda label, difficult: label == 1)
    det = evaluate(no_cars, dataset, progress=False)
    assert det["det_per_class_ap50"] == {"person": 1.0, "car": 0.0}
    assert det["det_voc_ap50"] == 0.5 and det["score"] == 0.5
    assert det["det_per_class_coco_map"]["car"] == 0.0


class ConstantPredictor:
    """Predicts background everywhere and one fixed car box per image, with falling scores."""

    tasks = ("segmentation", "detection")
    class_names = {"segmentation": SEG_NAMES, "detection": DET_NAMES}
    calls = 0

    def predict(self, image):
        self.calls += 1
        return SimpleNamespace(mask=np.zeros(image.shape[:2], np.uint8), boxes=np.array([[14.0, 4.0, 26.0, 13.0]]),
                               scores=np.array([1.0 - 0.1 * self.calls]), labels=np.array([1]),
                               timings=StageTimings(total_ms=1.0))


def test_constant_prediction_scores_are_hand_computed(data_dir):
    datasets = [seg_dataset(data_dir), det_dataset(data_dir)]
    result = evaluate(ConstantPredictor(), ConcatDataset(datasets), progress=False)
    # Segmentation: all background. IoU(background) = background pixels / labelled pixels, 0 for the others.
    masks = [np.asarray(Image.open(data_dir / "seg_masks" / f"s{k}.png")) for k in range(3)]
    labelled = sum(int((m != 255).sum()) for m in masks)
    background = sum(int((m == 0).sum()) for m in masks)
    assert result["seg_pixel_accuracy"] == pytest.approx(background / labelled)
    assert result["seg_iou"] == {"background": pytest.approx(background / labelled), "road": 0.0, "building": 0.0}
    assert result["seg_miou"] == pytest.approx(background / labelled / 3)
    # Detection: [14, 4, 26, 13] is image 1's car exactly (the best score: a hit); on image 2 it overlaps
    # the car [5, 5, 25, 20] with IoU 88 / 320 (a false positive), image 3 has no car. Cars: 2.
    # Car: precision 1 up to recall 1/2 -> all-point AP 0.5, 11-point 6/11. Person: never predicted, AP 0.
    assert result["det_per_class_ap50"] == {"person": 0.0, "car": 0.5}
    assert result["det_voc_ap50"] == pytest.approx(0.25)
    assert result["det_voc07_ap50"] == pytest.approx(3 / 11)
    assert result["det_num_detections"] == 3 and result["det_num_ground_truth"] == 5
    assert result["score"] == pytest.approx((background / labelled / 3 + 0.25) / 2)


def test_evaluate_runs_the_real_predictor_with_its_detection_params(data_dir, multitask_predictor):
    result = evaluate(multitask_predictor, det_dataset(data_dir), progress=False)
    assert result["detection_params"] == {"score_threshold": 0.01, "nms_iou": 0.45, "max_detections": 100}
    assert result["det_num_images"] == 3 and result["det_num_ground_truth"] == 5


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_training_validation_gives_the_figures_of_mtl_eval(data_dir, checkpoints, resize):
    """engine.evaluate (batches of 2 through Predictor.predict_batch over the in-memory network)
    and mtl-eval (one frame at a time through a Predictor built from the checkpoint)."""
    import dataclasses

    from mtl_perception.checkpoint import load_checkpoint
    from mtl_perception.training.engine import evaluate as training_evaluate

    datasets = [seg_dataset(data_dir), det_dataset(data_dir)]
    samples = [dataset[i] for dataset in datasets for i in range(len(dataset))]
    checkpoint = load_checkpoint(checkpoints["multitask"])
    checkpoint = dataclasses.replace(checkpoint, config=checkpoint.config.replace(resize=resize))
    params = DetectionParams(score_threshold=0.01)
    training = training_evaluate(checkpoint.build_model(), [samples[i: i + 2] for i in range(0, len(samples), 2)],
                                 checkpoint.class_names, torch.device("cpu"), params)
    deployed = evaluate(Predictor(checkpoint, device="cpu", detection=params), ConcatDataset(datasets), progress=False)
    assert training["num_images"] == deployed["num_images"] == 6
    for key in ("seg_miou", "seg_pixel_accuracy", "det_voc_ap50", "det_coco_map", "score"):
        assert training[key] == pytest.approx(deployed[key], abs=1e-3), key
    assert training["det_num_detections"] == deployed["det_num_detections"]


def test_only_the_checkpoint_tasks_are_scored(data_dir, checkpoints):
    both = ConcatDataset([seg_dataset(data_dir), det_dataset(data_dir)])
    detector = Predictor(checkpoints["detection"], device="cpu")
    result = evaluate(detector, both, progress=False)
    assert not [key for key in result if key.startswith("seg_")] and result["det_num_images"] == 3
    assert (result["num_images"], result["num_unlabelled"], result["num_skipped"]) == (3, 3, 0)
    segmenter = Predictor(checkpoints["segmentation"], device="cpu")
    with pytest.raises(EvaluationError, match="no sample of the dataset is labelled"):
        evaluate(segmenter, det_dataset(data_dir), progress=False)


def test_class_name_mismatch_is_refused(data_dir, multitask_predictor):
    renamed = {"name": "other", "segmentation": ["background", "building", "road"]}
    with pytest.raises(ClassMismatchError, match=r"segmentation classes differ: dataset \['background', 'building', "
                                                 r"'road'\] vs checkpoint \['background', 'road', 'building'\]"):
        evaluate(multitask_predictor, seg_dataset(data_dir, renamed), progress=False)
    stub = GroundTruthPredictor([], ["segmentation"])
    with pytest.raises(EvaluationError, match="cannot tell which segmentation classes"):
        evaluate(stub, [(torch.zeros(3, 4, 4, dtype=torch.uint8), {"image_id": "x", "mask": torch.zeros(4, 4)})],
                 progress=False)


def test_max_images_and_undecodable_images(data_dir, tmp_path):
    dataset = seg_dataset(data_dir)
    stub = GroundTruthPredictor([dataset], ["segmentation"])
    assert evaluate(stub, dataset, max_images=2, progress=False)["num_images"] == 2
    # A corrupt middle image: the dataset hands out the next one in its place, which is counted once.
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k in range(3):
        (images / f"s{k}.png").write_bytes((data_dir / "seg_images" / f"s{k}.png").read_bytes())
        (masks / f"s{k}.png").write_bytes((data_dir / "seg_masks" / f"s{k}.png").read_bytes())
    (images / "s1.png").write_bytes(b"not a png")
    result = evaluate(stub, SegmentationFolder(images, masks, SEG_CLASS_MAP), progress=False)
    assert result["num_images"] == 2 and result["num_skipped"] == 1
    assert stub.calls == 4
    assert result["seg_num_pixels"] == 2 * (H * W - IGNORED_PIXELS_PER_MASK)


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aerial_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(trunk="resnet18", input_size=(64, 64), num_seg_classes=2, num_det_classes=1,
                         det_extra_channels=(32, 32, 32), seg_head_channels=16, anchor_min_ratio=0.1)
    names = {"segmentation": ["background", "building"], "detection": ["tree"]}
    path = tmp_path_factory.mktemp("aerial_ckpt") / "aerial.pt"
    return save_checkpoint(make_checkpoint(build_model(config).eval(), names, {"name": "tiny-aerial"}), path)


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_writes_metrics_json(data_dir, checkpoints, tmp_path, capsys):
    config = write_config(tmp_path / "val.yaml", {"type": "coco", "image_dir": str(data_dir / "det_images"),
                                                   "ann_file": str(data_dir / "instances.json"), "crowd": "difficult"})
    out = tmp_path / "out" / "metrics.json"
    code = main(["--checkpoint", str(checkpoints["multitask"]), "--dataset-config", str(config), "--device", "cpu",
                 "--out", str(out), "--no-progress", "--max-detections", "50"])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["model"] == "tiny-multitask" and metrics["dataset"]["type"] == "coco"
    assert metrics["det_num_images"] == 3 and metrics["det_num_ground_truth"] == 5
    assert metrics["detection_params"] == {"score_threshold": 0.01, "nms_iou": 0.45, "max_detections": 50}
    assert metrics["det_num_detections"] <= 3 * 50
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left
    printed = capsys.readouterr().out
    assert "VOC AP50" in printed and "car" in printed and f"wrote {out}" in printed


@pytest.mark.parametrize("dataset, task", [("deepforest_trees", "detection"), ("solaris_buildings", "segmentation")])
def test_cli_real_aerial_heldout_splits(aerial_checkpoint, tmp_path, dataset, task):
    out = tmp_path / "metrics.json"
    code = main(["--checkpoint", str(aerial_checkpoint), "--dataset", dataset, "--split", "heldout",
                 "--device", "cpu", "--max-images", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["dataset"] == {"type": dataset, "split": "heldout"}
    prefix, other = ("det_", "seg_") if task == "detection" else ("seg_", "det_")
    assert metrics["num_images"] == 1 and metrics[f"{prefix}num_images"] == 1
    assert not [key for key in metrics if key.startswith(other)]


def test_cli_errors_are_one_line(data_dir, checkpoints, tmp_path, capsys):
    seg_cfg = {"type": "seg_folder", "image_dir": str(data_dir / "seg_images"), "mask_dir": str(data_dir / "seg_masks"),
               "class_map": {"name": "x", "segmentation": ["background", "building", "road"]}}
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--dataset", "solaris_buildings"], "checkpoint file not found"),
        (["--checkpoint", str(checkpoints["multitask"]), "--dataset-config", str(tmp_path / "nope.yaml")],
         "dataset config not found"),
        (["--checkpoint", str(checkpoints["multitask"]),
          "--dataset-config", str(write_config(tmp_path / "bad.yaml", {"type": "imagenet"}))], "needs 'type' in"),
        (["--checkpoint", str(checkpoints["multitask"]),
          "--dataset-config", str(write_config(tmp_path / "seg.yaml", seg_cfg))], "segmentation classes differ"),
        (["--checkpoint", str(checkpoints["multitask"]), "--dataset", "voc"], "--dataset voc needs --root"),
        (["--checkpoint", str(checkpoints["multitask"]), "--dataset", "solaris_buildings", "--max-images", "0"],
         "--max-images must be >= 1"),
    ]
    for argv, message in cases:
        out = tmp_path / "metrics.json"
        assert main(argv + ["--device", "cpu", "--no-progress", "--out", str(out)]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("mtl-eval: error: ") and message in err and "\n" not in err, err
        assert not out.exists()
    assert main(["--checkpoint", str(checkpoints["multitask"]), "--dataset", "solaris_buildings",
                 "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", "x.pt"])  # neither --dataset nor --dataset-config
    assert exit_info.value.code == 2


def test_python_dash_m_runs_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtl_perception.evaluation", "--checkpoint", str(tmp_path / "x.pt"),
                           "--dataset", "deepforest_trees"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "x.pt: checkpoint file not found" in proc.stderr and "Traceback" not in proc.stderr
