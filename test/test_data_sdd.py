"""Stanford Drone Dataset reader: annotations, stride and flag filters, frames and video."""

import logging
import pickle

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mtl_perception.data.errors import DatasetFormatError
from mtl_perception.data.sdd import SDD_CLASSES, StanfordDrone, parse_sdd_annotations

H, W = 48, 64
FRAMES_LINES = [
    '0 10 12 30 40 0 0 0 0 "Biker"',
    '1 5 5 15 15 0 1 0 0 "Pedestrian"',  # lost
    '0 11 12 31 40 30 0 1 0 "Biker"',  # occluded
    '2 40 20 60 44 30 0 0 1 "Car"',  # generated
    '3 1 1 5 5 45 0 0 0 "Skater"',  # not on the stride
    '0 12 12 32 40 60 0 0 0 "Biker"',
    '4 50 30 70 50 60 0 0 0 "Bus"',  # crosses the right border
]
VIDEO_LINES = [
    '0 1 2 11 12 0 0 0 0 "Cart"',
    '0 2 2 12 12 10 0 0 0 "Cart"',
    '1 20 20 30 30 20 0 0 0 "Pedestrian"',
    '1 21 20 31 30 35 0 0 0 "Pedestrian"',
]


def frame_color(frame):
    return (frame * 6, 255 - frame * 6, 128)  # RGB


@pytest.fixture
def sdd_root(tmp_path):
    root = tmp_path / "sdd"
    ann0 = root / "annotations/deathCircle/video0"
    ann0.mkdir(parents=True)
    (ann0 / "annotations.txt").write_text("\n".join(FRAMES_LINES) + "\n")
    frames = root / "frames/deathCircle/video0"
    frames.mkdir(parents=True)
    for frame in (0, 30, 60):
        Image.fromarray(np.full((H, W, 3), frame_color(frame), np.uint8)).save(frames / f"{frame:06d}.jpg", quality=95)
    ann1 = root / "annotations/gates/video1"
    ann1.mkdir(parents=True)
    (ann1 / "annotations.txt").write_text("\n".join(VIDEO_LINES) + "\n")
    videos = root / "videos/gates/video1"
    videos.mkdir(parents=True)
    writer = cv2.VideoWriter(str(videos / "video.mov"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    assert writer.isOpened()
    for frame in range(40):
        rgb = np.full((H, W, 3), frame_color(frame), np.uint8)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return root


def test_parse_annotations_columns(sdd_root):
    parsed = parse_sdd_annotations(sdd_root / "annotations/deathCircle/video0/annotations.txt")
    assert parsed.boxes.shape == (7, 4) and parsed.boxes[0].tolist() == [10, 12, 30, 40]
    assert parsed.frames.tolist() == [0, 0, 30, 30, 45, 60, 60]
    assert parsed.lost.tolist() == [False, True, False, False, False, False, False]
    assert parsed.occluded[2] and parsed.generated[3]
    assert parsed.names.tolist()[:2] == ["Biker", "Pedestrian"]


def test_frames_with_stride_and_lost_filter(sdd_root):
    dataset = StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30)
    assert len(dataset) == 3
    image, target = dataset[0]
    assert target["image_id"] == "deathCircle/video0/000000"
    assert tuple(image.shape) == (3, H, W) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[10, 12, 30, 40]]  # the lost pedestrian is dropped
    assert target["labels"].tolist() == [SDD_CLASSES.index("Biker")]
    assert set(target) == {"image_id", "boxes", "labels"}
    assert abs(int(image[0, 10, 10]) - 0) <= 3 and abs(int(image[1, 10, 10]) - 255) <= 3
    last = dataset[2][1]
    assert last["boxes"].tolist() == [[12, 12, 32, 40], [50, 30, 64, 48]]  # clamped to the image
    assert last["labels"].tolist() == [SDD_CLASSES.index("Biker"), SDD_CLASSES.index("Bus")]
    assert len(dataset[1][1]["boxes"]) == 2


def test_occluded_and_generated_filters(sdd_root):
    no_occluded = StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30, drop_occluded=True)
    assert no_occluded[1][1]["labels"].tolist() == [SDD_CLASSES.index("Car")]
    no_generated = StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30, drop_generated=True)
    assert no_generated[1][1]["labels"].tolist() == [SDD_CLASSES.index("Biker")]


def test_video_frames_are_the_right_ones_in_any_order(sdd_root):
    dataset = StanfordDrone(sdd_root, videos=["gates/video1"], frame_stride=10, frame_source="video")
    assert [dataset[i][1]["image_id"] for i in range(len(dataset))] == [
        f"gates/video1/{f:06d}" for f in (0, 10, 20, 30)
    ]
    for index in (3, 0, 2, 1, 1, 3):
        frame = (0, 10, 20, 30)[index]
        image, _ = dataset[index]
        assert abs(int(image[0, 24, 32]) - 6 * frame) <= 6, (index, int(image[0, 24, 32]))
    assert dataset[3][1]["boxes"].shape == (0, 4)  # frame 30: labelled for detection, nothing there
    assert dataset[1][1]["labels"].tolist() == [SDD_CLASSES.index("Cart")]
    pickle.loads(pickle.dumps(dataset))[0]  # DataLoader workers get a copy without open captures


def test_skip_empty_frames_and_all_videos(sdd_root):
    dataset = StanfordDrone(sdd_root, frame_stride=10, skip_empty_frames=True)
    ids = [dataset[i][1]["image_id"] for i in range(len(dataset))]
    assert "gates/video1/000030" not in ids
    assert ids[:3] == ["deathCircle/video0/000000", "deathCircle/video0/000030", "deathCircle/video0/000060"]


def test_class_remap_drops_unlisted_classes(sdd_root):
    dataset = StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30,
                            class_map={"detection": list(SDD_CLASSES), "rename": {"Bus": "vehicle", "Car": "vehicle"}},
                            det_classes=["vehicle"])
    assert dataset[2][1]["labels"].tolist() == [0]
    assert dataset[0][1]["labels"].tolist() == []


def test_malformed_line_names_file_and_line(sdd_root):
    path = sdd_root / "annotations/deathCircle/video0/annotations.txt"
    path.write_text(FRAMES_LINES[0] + "\n1 5 5 15 15 0 1 0\n")
    with pytest.raises(DatasetFormatError, match="annotations.txt:2: expected 10"):
        StanfordDrone(sdd_root, videos=["deathCircle/video0"])
    path.write_text('0 a 12 30 40 0 0 0 0 "Biker"\n')
    with pytest.raises(DatasetFormatError, match="annotations.txt:1: non-numeric"):
        StanfordDrone(sdd_root, videos=["deathCircle/video0"])
    path.write_text('0 10 12 30 40 0 0 0 0 "Dragon"\n')
    with pytest.raises(DatasetFormatError, match="unknown classes \\['Dragon'\\]"):
        StanfordDrone(sdd_root, videos=["deathCircle/video0"])


def test_missing_frames_and_videos_are_reported(sdd_root):
    (sdd_root / "frames/deathCircle/video0/000030.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000030.jpg"):
        StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30)
    with pytest.raises(FileNotFoundError, match="videos/deathCircle/video0/video.mov"):
        StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_source="video")
    with pytest.raises(FileNotFoundError, match="annotations.txt"):
        StanfordDrone(sdd_root, videos=["deathCircle/video7"])


def test_corrupt_frame_is_skipped(sdd_root, caplog):
    (sdd_root / "frames/deathCircle/video0/000030.jpg").write_bytes(b"broken")
    dataset = StanfordDrone(sdd_root, videos=["deathCircle/video0"], frame_stride=30)
    with caplog.at_level(logging.WARNING):
        assert dataset[1][1]["image_id"] == "deathCircle/video0/000060"
    assert any("000030.jpg" in r.getMessage() for r in caplog.records)
