"""Tiny datasets written in their real on-disk formats (VisDrone-DET, UAVid, Semantic Drone,
VOC + SBD, Stanford Drone, an Okutama/Swiss-style folder), shared by the reader tests and the
smoke tests of config/train/*.yaml. Every writer returns what it wrote, so tests can state the
expected boxes and masks by hand."""

from pathlib import Path

import numpy as np
import scipy.io
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def class_map_yaml(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "config" / "datasets" / f"{name}.yaml").read_text())


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 80, (height, width, 3), dtype=np.uint8)


# -- VisDrone2019-DET: images/<name>.jpg + annotations/<name>.txt -------------------------------

# bbox_left,bbox_top,bbox_width,bbox_height,score,object_category,truncation,occlusion
VISDRONE_LINES = {
    "0000001_00000_d_0000001": [
        "10,12,20,16,1,4,0,0",    # car
        "40,30,8,14,1,1,0,1",     # pedestrian, partly occluded
        "60,5,30,20,0,0,0,0",     # ignored region
        "5,40,10,10,1,11,0,0",    # others
        "70,40,12,8,1,6,1,2,",    # truck, truncated and heavily occluded (trailing comma as in the release)
    ],
    "0000002_00000_d_0000002": [
        "0,0,16,12,1,10,0,0",     # motor
        "30,20,24,18,1,9,0,0",    # bus
    ],
}
VISDRONE_SIZE = (60, 96)  # (H, W)


def write_visdrone(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for seed, (stem, lines) in enumerate(VISDRONE_LINES.items()):
        Image.fromarray(noise_image(*VISDRONE_SIZE, seed)).save(root / "images" / f"{stem}.jpg", quality=95)
        (root / "annotations" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


# -- UAVid: <split>/seqN/Images/<frame>.png + seqN/Labels/<frame>.png (colour labels) ---------------

UAVID_SIZE = (24, 40)  # a 16:9-ish stand-in for the 4K frames


def uavid_index_mask(seed: int) -> np.ndarray:
    """Class indices 0..7 of config/datasets/uavid.yaml in vertical stripes, rotated by ``seed``."""
    columns = (np.arange(UAVID_SIZE[1]) // 5 + seed) % 8
    return np.broadcast_to(columns, UAVID_SIZE).astype(np.uint8).copy()


def write_uavid(root: Path, sequences=("seq1", "seq2")) -> dict[str, np.ndarray]:
    """Returns {image id: index mask in the source (8-class) indices}."""
    palette = np.array(class_map_yaml("uavid")["palette"], dtype=np.uint8)
    written = {}
    for seed, sequence in enumerate(sequences):
        (root / sequence / "Images").mkdir(parents=True)
        (root / sequence / "Labels").mkdir()
        mask = uavid_index_mask(seed)
        Image.fromarray(noise_image(*UAVID_SIZE, seed)).save(root / sequence / "Images" / "000000.png")
        Image.fromarray(palette[mask]).save(root / sequence / "Labels" / "000000.png")
        written[f"{sequence}/Images/000000"] = mask
    return written


# -- Semantic Drone Dataset: original_images/<n>.jpg + label_images_semantic/<n>.png (grey index) --

SEMANTIC_DRONE_SIZE = (40, 60)  # 6000x4000 frames, scaled down 100x


def semantic_drone_index_mask(seed: int) -> np.ndarray:
    rows = (np.arange(SEMANTIC_DRONE_SIZE[0])[:, None] // 4 + seed) % 24
    return np.broadcast_to(rows, SEMANTIC_DRONE_SIZE).astype(np.uint8).copy()


def write_semantic_drone(root: Path, count: int = 2) -> dict[str, np.ndarray]:
    (root / "original_images").mkdir(parents=True)
    (root / "label_images_semantic").mkdir()
    written = {}
    for index in range(count):
        stem = f"{index:03d}"
        Image.fromarray(noise_image(*SEMANTIC_DRONE_SIZE, index)).save(root / "original_images" / f"{stem}.jpg")
        mask = semantic_drone_index_mask(index)
        Image.fromarray(mask, mode="L").save(root / "label_images_semantic" / f"{stem}.png")
        written[stem] = mask
    return written


# -- Pascal VOC 2012 + SBD (both-task subset) ---------------------------------------------------

VOC_SIZE = (48, 64)


def _voc_xml(path: Path, objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    body = "".join(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    path.write_text(f"<annotation><size><width>{VOC_SIZE[1]}</width><height>{VOC_SIZE[0]}</height><depth>3</depth>"
                    f"</size>{body}</annotation>")


def write_voc(root: Path) -> tuple[Path, Path]:
    """VOCdevkit/VOC2012 with seg train/val PNGs and boxes, and SBD masks; returns (devkit, sbd)."""
    from mtl_perception.data.voc import voc_palette

    devkit, sbd = root / "VOCdevkit", root / "SBD" / "dataset"
    voc = devkit / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    (sbd / "cls").mkdir(parents=True)
    stems = ["2008_000001", "2008_000002", "2008_000003", "2008_000004"]
    for index, stem in enumerate(stems):
        Image.fromarray(noise_image(*VOC_SIZE, index)).save(voc / "JPEGImages" / f"{stem}.jpg")
        _voc_xml(voc / "Annotations" / f"{stem}.xml", [("dog", (5, 6, 30, 40)), ("cat", (35, 10, 60, 44))])
        mask = np.zeros(VOC_SIZE, np.uint8)
        mask[6:40, 5:30] = 12  # dog
        mask[10:44, 35:60] = 8  # cat
        if index < 2:
            png = Image.fromarray(mask, mode="P")
            png.putpalette([c for rgb in voc_palette(256) for c in rgb])
            png.save(voc / "SegmentationClass" / f"{stem}.png")
        else:
            scipy.io.savemat(sbd / "cls" / f"{stem}.mat", {"GTcls": {"Segmentation": mask}})
    (voc / "ImageSets/Segmentation/train.txt").write_text(f"{stems[0]}\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text(f"{stems[1]}\n")
    (sbd / "train.txt").write_text(f"{stems[2]}\n")
    (sbd / "val.txt").write_text(f"{stems[3]}\n")
    return devkit, sbd.parent


# -- Stanford Drone Dataset: annotations/<scene>/<video>/annotations.txt + extracted frames --------

SDD_SIZE = (48, 64)


def write_sdd(root: Path, stride: int = 30) -> Path:
    ann = root / "annotations" / "gates" / "video0"
    ann.mkdir(parents=True)
    frames = root / "frames" / "gates" / "video0"
    frames.mkdir(parents=True)
    lines = []
    for k, frame in enumerate(range(0, 4 * stride, stride)):
        Image.fromarray(noise_image(*SDD_SIZE, k)).save(frames / f"{frame:06d}.jpg")
        lines.append(f'0 {5 + k} 8 {25 + k} 30 {frame} 0 0 0 "Pedestrian"')
        lines.append(f'1 30 20 {55 - k} 44 {frame} 0 0 0 "Car"')
    (ann / "annotations.txt").write_text("\n".join(lines) + "\n")
    return root


# -- Okutama/Swiss-style folder: images/<name>.png + labels/<name>.png (index PNGs) ---------------

def write_seg_folder(root: Path, count: int = 3, size=(48, 64)) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index in range(count):
        Image.fromarray(noise_image(*size, index)).save(root / "images" / f"{index:03d}.png")
        mask = ((np.arange(size[1])[None, :] // 8 + index) % 7).astype(np.uint8)
        Image.fromarray(np.broadcast_to(mask, size).copy(), mode="L").save(root / "labels" / f"{index:03d}.png")
    return root
