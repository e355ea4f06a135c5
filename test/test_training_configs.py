"""Every config in config/train/ trains 2 steps through ``mtl-train`` on tiny datasets written in
the real formats (paths, input size and pretrained weights overridden with ``--set``), and the
checkpoint it writes holds the classes the dataset class maps name."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import (REPO_ROOT, class_map_yaml, write_sdd, write_seg_folder, write_uavid, write_visdrone,
                              write_voc)
from mtl_perception.checkpoint import load_checkpoint
from mtl_perception.data.aerial import package_data_dir
from mtl_perception.data.visdrone import VISDRONE_CLASSES
from mtl_perception.data.voc import VOC_DETECTION_CLASSES, VOC_SEGMENTATION_CLASSES
from mtl_perception.predictor import Predictor
from mtl_perception.training.cli import main

CONFIG_DIR = REPO_ROOT / "config" / "train"
UAVID_MODEL_CLASSES = ["background", "building", "road", "tree", "low_vegetation", "car", "human"]
SDD_CLASSES = class_map_yaml("sdd")["detection"]
AERIAL_SEG_CLASSES = class_map_yaml("aerial_seg_example")["segmentation"]
# The run's overrides beside the data paths: 2 steps, small inputs, no pretrained files.
FAST = ["train.max_steps=2", "train.workers=0", "train.progress=false", "train.threads=1", "train.device=cpu",
        "train.amp=none", "train.eval_every_epochs=0", "trunk_weights=null"]


def voc_overrides(root: Path) -> list[str]:
    devkit, sbd = write_voc(root)
    return [f"data.train.0.dataset.root={devkit}", f"data.train.0.dataset.sbd_root={sbd}",
            f"data.val.0.root={devkit}", "model.input_size=[64, 64]"]


def aerial_paper_overrides(root: Path) -> list[str]:
    return [f"data.train.0.dataset.root={write_sdd(root / 'sdd')}",
            f"data.train.1.dataset.image_dir={write_seg_folder(root / 'aerial_seg') / 'images'}",
            f"data.train.1.dataset.mask_dir={root / 'aerial_seg' / 'labels'}", "model.input_size=[64, 64]"]


def visdrone_uavid_overrides(root: Path) -> list[str]:
    write_visdrone(root / "VisDrone2019-DET-train")
    write_visdrone(root / "VisDrone2019-DET-val")
    write_uavid(root / "uavid_train")
    write_uavid(root / "uavid_val", sequences=("seq3",))
    return [f"data.train.0.dataset.root={root / 'VisDrone2019-DET-train'}",
            f"data.train.1.dataset.image_dir={root / 'uavid_train'}", f"data.train.1.dataset.mask_dir={root / 'uavid_train'}",
            "data.train.1.dataset.tile.size=[12, 20]", "data.train.1.dataset.tile.stride=[12, 20]",
            f"data.val.0.root={root / 'VisDrone2019-DET-val'}",
            f"data.val.1.image_dir={root / 'uavid_val'}", f"data.val.1.mask_dir={root / 'uavid_val'}",
            "model.input_size=[64, 96]"]


def demo_overrides(root: Path) -> list[str]:
    try:  # the packaged sample data the demo recipe reads
        package_data_dir("deepforest", "2.1.0"), package_data_dir("solaris", "0.2.1")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return ["model.input_size=[64, 64]"]


VOC_CLASSES = {"segmentation": list(VOC_SEGMENTATION_CLASSES), "detection": list(VOC_DETECTION_CLASSES)}
# config file -> (data overrides, the class lists the checkpoint must hold, resize)
CONFIGS = {
    "demo_aerial.yaml": (demo_overrides, {"segmentation": ["background", "building"], "detection": ["tree"]}, "stretch"),
    "voc_multitask.yaml": (voc_overrides, VOC_CLASSES, "stretch"),
    "voc_segmentation.yaml": (voc_overrides, VOC_CLASSES, "stretch"),
    "voc_detection.yaml": (voc_overrides, VOC_CLASSES, "stretch"),
    "aerial_paper.yaml": (aerial_paper_overrides, {"segmentation": AERIAL_SEG_CLASSES, "detection": SDD_CLASSES},
                          "letterbox"),
    "aerial_visdrone_uavid.yaml": (visdrone_uavid_overrides,
                                   {"segmentation": UAVID_MODEL_CLASSES, "detection": list(VISDRONE_CLASSES)}, "letterbox"),
}
TASKS = {"voc_segmentation.yaml": "segmentation", "voc_detection.yaml": "detection"}
CASES = [(name, None) for name in sorted(CONFIGS)] + [("aerial_visdrone_uavid.yaml", "segmentation"),
                                                       ("aerial_visdrone_uavid.yaml", "detection")]


def test_every_shipped_config_has_a_smoke_test():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(CONFIGS)


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, task", CASES, ids=[f"{n}-{t or 'as-written'}" for n, t in CASES])
def test_config_trains_two_steps_on_tiny_real_format_data(name, task, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # class-map paths in the configs are relative to the repository
    data_overrides, classes, resize = CONFIGS[name]
    overrides = FAST + data_overrides(tmp_path / "data") + ([f"task={task}"] if task else [])
    output = tmp_path / "run"
    argv = ["--config", str(CONFIG_DIR / name), "--output", str(output)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0, capsys.readouterr().err
    checkpoint = load_checkpoint(output / "last.pt")
    expected_task = task or TASKS.get(name, "multitask")
    tasks = ("segmentation", "detection") if expected_task == "multitask" else (expected_task,)
    assert checkpoint.config.tasks == tasks
    assert checkpoint.class_names == {t: classes[t] for t in tasks}
    assert checkpoint.config.resize == resize
    prediction = Predictor(output / "last.pt", device="cpu", warmup=0).predict(np.zeros((36, 64, 3), np.uint8))
    assert (prediction.mask is not None) == ("segmentation" in tasks)
    if prediction.mask is not None:
        assert prediction.mask.shape == (36, 64)  # a 16:9 frame comes back at its own size
