"""Bag tools: make-bag round trips (images, video, datasets), second readers (mcap, rclpy),
bag-info, BagReader errors on bad bags, and atomic writing."""

import json

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image as PILImage
from rosbags.rosbag2 import Reader

from mtl_perception.bags import (
    BagError,
    BagReader,
    BagWriter,
    detections_message,
    detections_to_arrays,
    deserialize,
    image_message,
    serialize,
)
from mtl_perception.bags.bag_info import format_summary, summarize_bag
from mtl_perception.bags.bag_info import main as bag_info_main
from mtl_perception.bags.demo import make_demo_bag
from mtl_perception.bags.make_bag import frame_stamp_ns, main as make_bag_main, write_bag
from mtl_perception.bags.sources import ImageFolderSource, SourceFrame
from mtl_perception.bags.topics import GT_DETECTIONS_TOPIC, GT_SEGMENTATION_TOPIC
from mtl_perception.bags.typestore import IMAGE, bag_typestore
from mtl_perception.data import build_dataset

START_NS = 1_700_000_000_123_456_789


def _random_images(count, height=24, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def image_folder(tmp_path):
    """Three smooth 24x32 colour images (JPEG-friendly, distinct from each other)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rows, cols = np.mgrid[0:24, 0:32]
    images = [np.stack([rows * 10 + 5 * i, cols * 8, 255 - cols * 4 - rows * 3 * i], axis=-1).astype(np.uint8)
              for i in range(3)]
    for i, image in enumerate(images):
        PILImage.fromarray(image).save(folder / f"frame_{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder, images


@pytest.fixture
def seg_folder(tmp_path):
    """Three 20x30 images with index masks (0 background, 1 road, 2 car, 255 ignore)."""
    image_dir, mask_dir = tmp_path / "seg" / "images", tmp_path / "seg" / "masks"
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    masks = []
    for i, image in enumerate(_random_images(3, 20, 30, seed=2)):
        mask = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(20, 30))
        PILImage.fromarray(image).save(image_dir / f"img{i}.png")
        PILImage.fromarray(mask).save(mask_dir / f"img{i}.png")
        masks.append(mask)
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({"dataset": {
        "type": "seg_folder", "image_dir": str(image_dir), "mask_dir": str(mask_dir),
        "class_map": {"segmentation": ["background", "road", "car"]},
    }}))
    return config, masks


def _voc_xml(objects):
    body = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, (x1, y1, x2, y2) in objects
    )
    return f"<annotation><size><width>40</width><height>30</height><depth>3</depth></size>{body}</annotation>"


@pytest.fixture
def voc_root(tmp_path):
    """A two-image VOC2012 with boxes and masks on the same images (mode 'both')."""
    year = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        (year / sub).mkdir(parents=True)
    objects = {"a": [("person", (3, 4, 20, 25)), ("car", (22, 2, 40, 12))], "b": [("car", (1, 1, 10, 10))]}
    for stem, items in objects.items():
        PILImage.fromarray(_random_images(1, 30, 40, seed=len(items))[0]).save(year / "JPEGImages" / f"{stem}.jpg")
        (year / "Annotations" / f"{stem}.xml").write_text(_voc_xml(items))
        mask = np.zeros((30, 40), np.uint8)
        mask[4:25, 3:20] = 15
        mask[2:12, 22:40] = 7
        mask[0, :] = 255
        PILImage.fromarray(mask).save(year / "SegmentationClass" / f"{stem}.png")
    (year / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    return tmp_path / "VOCdevkit"


def _camera_frames(bag_path, **kwargs):
    with BagReader(bag_path, **kwargs) as bag:
        return list(bag.frames())


def test_image_folder_round_trip_is_exact_with_stamps_at_rate(tmp_path, image_folder):
    folder, images = image_folder
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--images", str(folder), "--rate", "4", "--start-time", "1700000000.5",
                          "--frame-id", "cam0", "--quiet"]) == 0
    with BagReader(out) as bag:
        assert bag.camera_topic == "/camera/image_raw" and bag.camera_msgtype == IMAGE
        assert bag.storage == "mcap" and bag.frame_count == 3
        frames = list(bag.frames())
        assert bag.ground_truth_detections() == {} and bag.ground_truth_masks() == {}
        assert bag.detection_classes is None and bag.segmentation_classes is None
    start = 1_700_000_000_500_000_000
    assert [f.stamp_ns for f in frames] == [start, start + 250_000_000, start + 500_000_000]
    assert [f.bag_time_ns for f in frames] == [f.stamp_ns for f in frames]
    assert all(f.frame_id == "cam0" and f.encoding == "rgb8" for f in frames)
    for frame, image in zip(frames, images):
        np.testing.assert_array_equal(frame.image, image)


def test_bgr8_encoding_stores_reversed_channels_and_decodes_to_rgb(tmp_path, image_folder):
    folder, images = image_folder
    write_bag(ImageFolderSource(folder), tmp_path / "bag",
              encoding="bgr8", start_ns=START_NS)
    with BagReader(tmp_path / "bag") as bag:
        frame = next(bag.frames())
    raw = deserialize(frame.rawdata, IMAGE)
    assert raw.encoding == "bgr8"
    np.testing.assert_array_equal(np.asarray(raw.data).reshape(24, 32, 3), images[0][:, :, ::-1])
    np.testing.assert_array_equal(frame.image, images[0])


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_frames_go_on_the_compressed_topic(tmp_path, image_folder, fmt):
    folder, images = image_folder
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--images", str(folder), "--compressed", fmt, "--quiet"]) == 0
    frames = _camera_frames(out)
    assert {f.msgtype for f in frames} == {"sensor_msgs/msg/CompressedImage"}
    with BagReader(out) as bag:
        assert bag.camera_topic == "/camera/image_raw/compressed"
    assert fmt in frames[0].encoding
    for frame, image in zip(frames, images):
        if fmt == "png":
            np.testing.assert_array_equal(frame.image, image)
        else:
            assert frame.image.shape == image.shape
            assert np.abs(frame.image.astype(int) - image).mean() < 3


def test_video_round_trip_uses_the_video_rate_and_max_frames(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (48, 32))
    for i in range(6):
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[:, : 8 * (i + 1)] = (20 * i, 255 - 20 * i, 100)
        writer.write(frame)
    writer.release()
    capture, expected = cv2.VideoCapture(str(video)), []
    while (result := capture.read())[0]:
        expected.append(cv2.cvtColor(result[1], cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(expected) == 6

    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--video", str(video), "--max-frames", "4", "--start-time", "100", "--quiet"]) == 0
    frames = _camera_frames(out)
    assert len(frames) == 4
    assert [f.stamp_ns for f in frames] == [100_000_000_000 + 125_000_000 * i for i in range(4)]
    for frame, image in zip(frames, expected):
        np.testing.assert_array_equal(frame.image, image)


def test_seg_folder_config_to_sqlite3_masks_come_back_aligned(tmp_path, seg_folder):
    config, masks = seg_folder
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--dataset-config", str(config), "--storage", "sqlite3", "--rate", "2",
                          "--start-time", "10", "--quiet"]) == 0
    assert list(out.glob("*.db3")) and not list(out.glob("*.mcap"))
    with BagReader(out) as bag:
        assert bag.storage == "sqlite3"
        assert bag.segmentation_classes == ("background", "road", "car")
        assert bag.detection_classes is None
        frames = list(bag.frames())
        truth = bag.ground_truth_masks()
        assert bag.ground_truth_detections() == {}
    assert sorted(truth) == [f.stamp_ns for f in frames] == [10_000_000_000 + 500_000_000 * i for i in range(3)]
    for frame, mask in zip(frames, masks):
        np.testing.assert_array_equal(truth[frame.stamp_ns], mask)

    # a second reader: rosbags' own, straight on the sqlite3 bag
    with Reader(out) as reader:
        store = bag_typestore()
        by_topic = {}
        for connection, bag_time, raw in reader.messages():
            by_topic.setdefault(connection.topic, []).append((bag_time, store.deserialize_cdr(raw, connection.msgtype)))
    seg_messages = by_topic[GT_SEGMENTATION_TOPIC]
    assert [t for t, _ in seg_messages] == [t for t, _ in by_topic["/camera/image_raw"]]
    assert seg_messages[1][1].encoding == "mono8"
    np.testing.assert_array_equal(np.asarray(seg_messages[1][1].data).reshape(20, 30), masks[1])


def test_voc_both_boxes_and_masks_match_the_dataset(tmp_path, voc_root):
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--dataset", "voc", "--dataset-option", f"root={voc_root}",
                          "--dataset-option", "splits=['2012:train']", "--dataset-option", "mode=both", "--quiet"]) == 0
    dataset = build_dataset({"type": "voc", "root": voc_root, "splits": ["2012:train"], "mode": "both"})
    with BagReader(out) as bag:
        frames = list(bag.frames())
        boxes = bag.ground_truth_detections()
        masks = bag.ground_truth_masks()
        assert len(bag.detection_classes) == 20 and bag.detection_classes[14] == "person"
        assert bag.segmentation_classes[0] == "background" and len(bag.segmentation_classes) == 21
    assert len(frames) == 2
    for index, frame in enumerate(frames):
        image, target = dataset.load_sample(index)
        np.testing.assert_array_equal(frame.image, image.permute(1, 2, 0).numpy())
        truth = boxes[frame.stamp_ns]
        np.testing.assert_array_equal(truth.boxes, target["boxes"].numpy())
        np.testing.assert_array_equal(truth.labels, target["labels"].numpy())
        np.testing.assert_array_equal(masks[frame.stamp_ns], target["mask"].numpy())
    first = boxes[frames[0].stamp_ns]
    assert first.class_ids == ("person", "car")
    np.testing.assert_array_equal(first.boxes[0], [2, 3, 20, 25])  # VOC 1-based -> continuous


def test_deepforest_dataset_boxes_round_trip(tmp_path):
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--dataset", "deepforest_trees", "--dataset-option", "split=heldout",
                          "--max-frames", "2", "--quiet"]) == 0
    dataset = build_dataset({"type": "deepforest_trees", "split": "heldout"})
    with BagReader(out) as bag:
        assert bag.detection_classes == ("tree",)
        frames = list(bag.frames())
        truth = bag.ground_truth_detections()
    assert len(frames) == 2 and len(truth) == 2
    for index, frame in enumerate(frames):
        image, target = dataset.load_sample(index)
        assert frame.image.shape == tuple(image.shape[1:]) + (3,)  # original tile size
        np.testing.assert_array_equal(truth[frame.stamp_ns].boxes, target["boxes"].numpy())
        assert set(truth[frame.stamp_ns].class_ids) == {"tree"} and (truth[frame.stamp_ns].labels == 0).all()
        assert len(target["boxes"]) > 10


def test_resize_scales_boxes_and_masks(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 1
    frame = SourceFrame(image, "x", np.array([[6, 4, 30, 20]], np.float32), np.array([0]), mask)
    write_bag([frame], tmp_path / "bag", resize=(30, 0), detection_classes=["thing"],
              segmentation_classes=["bg", "fg"], start_ns=START_NS)
    with BagReader(tmp_path / "bag") as bag:
        (camera,) = list(bag.frames())
        boxes = bag.ground_truth_detections()[camera.stamp_ns]
        small_mask = bag.ground_truth_masks()[camera.stamp_ns]
    assert camera.image.shape == (20, 30, 3)
    np.testing.assert_allclose(boxes.boxes, [[3, 2, 15, 10]])
    assert small_mask.shape == (20, 30)
    assert (small_mask[:, :15] == 0).all() and (small_mask[:, 15:] == 1).all()


def test_detections_message_round_trip_and_index_labels():
    boxes = np.array([[1.5, 2.0, 10.25, 20.0], [0, 0, 3, 4]], np.float32)
    message = detections_message(boxes, [1, 0], [0.9, 0.25], 5_000_000_001, "cam", class_names=["car", "person"])
    back = deserialize(serialize(message), "vision_msgs/msg/Detection2DArray")
    assert back.header.stamp.sec == 5 and back.header.stamp.nanosec == 1 and back.header.frame_id == "cam"
    assert back.detections[0].bbox.center.position.x == pytest.approx(5.875)
    assert back.detections[0].bbox.size_y == pytest.approx(18.0)
    decoded_boxes, class_ids, scores = detections_to_arrays(back)
    np.testing.assert_array_equal(decoded_boxes, boxes)
    assert class_ids == ["person", "car"]
    np.testing.assert_allclose(scores, [0.9, 0.25])
    with pytest.raises(ValueError, match="outside the 2 class names"):
        detections_message(boxes, [2, 0], class_names=["car", "person"])


def test_mcap_is_readable_by_the_mcap_library(tmp_path, voc_root):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--dataset", "voc", "--dataset-option", f"root={voc_root}", "--start-time", "3",
                          "--quiet"]) == 0
    with BagReader(out) as bag:
        frames = list(bag.frames())
        truth = bag.ground_truth_detections()
    (mcap_file,) = out.glob("*.mcap")
    decoded = {}
    with open(mcap_file, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, ros_msg in reader.iter_decoded_messages():
            decoded.setdefault(channel.topic, []).append((schema.name, message.log_time, ros_msg))
    images = decoded["/camera/image_raw"]
    assert [name for name, _, _ in images] == ["sensor_msgs/msg/Image"] * 2
    assert [t for _, t, _ in images] == [f.stamp_ns for f in frames]
    first = images[0][2]
    assert (first.height, first.width, first.encoding) == (30, 40, "rgb8")
    np.testing.assert_array_equal(np.frombuffer(bytes(first.data), np.uint8).reshape(30, 40, 3), frames[0].image)
    name, log_time, detections = decoded[GT_DETECTIONS_TOPIC][0]
    assert name == "vision_msgs/msg/Detection2DArray" and log_time == frames[0].stamp_ns
    centers = [(d.bbox.center.position.x, d.bbox.center.position.y) for d in detections.detections]
    expected = truth[frames[0].stamp_ns].boxes
    np.testing.assert_allclose(centers, (expected[:, :2] + expected[:, 2:]) / 2)
    assert [d.results[0].hypothesis.class_id for d in detections.detections] == ["person", "car"]
    label_info = decoded["/ground_truth/detections/label_info"][0][2]
    assert [c.class_name for c in label_info.class_map][:2] == ["aeroplane", "bicycle"]


def test_rclpy_deserializes_the_image_cdr(tmp_path, image_folder):
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    folder, images = image_folder
    write_bag(ImageFolderSource(folder), tmp_path / "bag",
              start_ns=START_NS, frame_id="cam")
    frame = _camera_frames(tmp_path / "bag")[0]
    message = deserialize_message(frame.rawdata, Image)
    assert (message.height, message.width, message.encoding, message.step) == (24, 32, "rgb8", 96)
    assert message.header.frame_id == "cam"
    assert message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec == START_NS
    np.testing.assert_array_equal(np.asarray(message.data, np.uint8).reshape(24, 32, 3), images[0])


def test_rclpy_deserializes_detections_when_vision_msgs_is_built():
    pytest.importorskip("rclpy", reason="rclpy is not importable: run 'make setup'")
    vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs twin not built: run 'make build'")
    from rclpy.serialization import deserialize_message

    raw = serialize(detections_message(np.array([[1, 2, 5, 10]]), ["tree"], [0.75], 7, "cam"))
    message = deserialize_message(raw, vision_msgs.Detection2DArray)
    (detection,) = message.detections
    assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == (3.0, 6.0)
    assert (detection.bbox.size_x, detection.bbox.size_y) == (4.0, 8.0)
    assert detection.results[0].hypothesis.class_id == "tree"
    assert detection.results[0].hypothesis.score == 0.75


def test_bag_info_reports_counts_rates_and_ground_truth(tmp_path, seg_folder, capsys):
    config, _ = seg_folder
    out = tmp_path / "bag"
    assert make_bag_main([str(out), "--dataset-config", str(config), "--rate", "5", "--quiet"]) == 0
    capsys.readouterr()
    summary = summarize_bag(out)
    assert summary["storage"] == "mcap" and summary["camera_topic"] == "/camera/image_raw"
    assert summary["message_count"] == 3 + 3 + 1
    camera = summary["topics"]["/camera/image_raw"]
    assert camera["type"] == "sensor_msgs/msg/Image" and camera["count"] == 3
    assert camera["rate_hz"] == pytest.approx(5.0)
    assert summary["duration_s"] == pytest.approx(0.4)
    assert summary["images"]["/camera/image_raw"] == {"sizes": {"30x20": 3}, "encodings": {"rgb8": 3}}
    assert summary["ground_truth"] == {"segmentation": {"frames": 3, "classes": ["background", "road", "car"],
                                                        "aligned_frames": 3}}

    assert bag_info_main([str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["topics"]["/ground_truth/segmentation"]["count"] == 3
    assert bag_info_main([str(out)]) == 0
    text = capsys.readouterr().out
    assert text == format_summary(summary) + "\n"
    assert "segmentation: 3 frames (3 aligned" in text and "5.00 Hz" in text


def test_demo_bag_has_trees_photo_and_buildings(tmp_path):
    summary = make_demo_bag(tmp_path / "demo", start_ns=START_NS)
    # demo.py's frames: 10 held-out deepforest tiles (323 boxes), the drone photo, 3 solaris tiles
    assert (summary.frames, summary.detection_frames, summary.segmentation_frames, summary.rate_hz) == (14, 10, 3, 3.0)
    with BagReader(tmp_path / "demo") as bag:
        assert bag.detection_classes == ("tree",)
        assert bag.segmentation_classes == ("background", "building")
        frames = list(bag.frames())
        boxes, masks = bag.ground_truth_detections(), bag.ground_truth_masks()
    assert len(frames) == summary.frames
    assert [f.stamp_ns for f in frames] == [frame_stamp_ns(START_NS, i, 3.0) for i in range(len(frames))]
    photos = [f for f in frames if f.image.shape[1] == 640]
    assert len(photos) == 1 and photos[0].image.shape == (603, 640, 3)  # 1058x997 photo kept its aspect
    assert photos[0].stamp_ns not in boxes and photos[0].stamp_ns not in masks
    stamps = [f.stamp_ns for f in frames]
    assert sorted(boxes) == stamps[:10] and sorted(masks) == stamps[11:] and photos[0].stamp_ns == stamps[10]
    assert sum(len(b.boxes) for b in boxes.values()) == 323
    assert all(set(np.unique(m)) <= {0, 1} for m in masks.values())
    assert any((m == 1).any() for m in masks.values())


# --- bad bags -------------------------------------------------------------------------------

def _bag_with(path, topics):
    with BagWriter(path) as bag:
        for topic, msgtype, stamp, raw in topics:
            bag.write(topic, msgtype, stamp, raw)
    return path


def _good_bag(tmp_path):
    frame = SourceFrame(np.zeros((4, 4, 3), np.uint8), "x")
    write_bag([frame] * 3, tmp_path / "good", start_ns=START_NS)
    return tmp_path / "good"


def test_missing_path(tmp_path):
    with pytest.raises(BagError, match=r"nothing_here: path does not exist"):
        BagReader(tmp_path / "nothing_here")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"empty: empty directory"):
        BagReader(tmp_path / "empty")


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_garbage_file(tmp_path, suffix):
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BagError, match=rf"garbage\{suffix}: cannot be read, corrupt or truncated"):
        BagReader(garbage)


def test_not_a_bag_file(tmp_path):
    (tmp_path / "clip.avi").write_bytes(b"RIFF")
    with pytest.raises(BagError, match=r"clip.avi: not a bag"):
        BagReader(tmp_path / "clip.avi")


def test_directory_without_a_bag(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("hello")
    with pytest.raises(BagError, match=r"photos: not a rosbag2 bag"):
        BagReader(tmp_path / "photos")


def test_truncated_mcap(tmp_path):
    bag = _good_bag(tmp_path)
    (mcap_file,) = bag.glob("*.mcap")
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=r"good: cannot (be read|read messages), corrupt or truncated"):
        with BagReader(bag) as reader:
            list(reader.frames())


def test_corrupt_metadata(tmp_path):
    bag = _good_bag(tmp_path)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    with pytest.raises(BagError, match=r"good: cannot be read"):
        BagReader(bag)


def test_bag_without_camera_topic(tmp_path):
    raw = serialize(detections_message(np.zeros((0, 4)), [], None, START_NS))
    bag = _bag_with(tmp_path / "nocam", [(GT_DETECTIONS_TOPIC, "vision_msgs/msg/Detection2DArray", START_NS, raw)])
    with pytest.raises(BagError, match=r"nocam: has no camera topic .*ground_truth/detections"):
        BagReader(bag)
    good = _good_bag(tmp_path)
    with pytest.raises(BagError, match=r"good: camera topic '/front/image' not found"):
        BagReader(good, camera_topic="/front/image")
    with pytest.raises(BagError, match=r"nocam: camera topic '/camera/image_raw' not found"):
        summarize_bag(bag, camera_topic="/camera/image_raw")
    assert summarize_bag(bag)["camera_topic"] is None  # bag-info still summarises it


def test_bag_with_zero_messages(tmp_path, capsys):
    bag = _bag_with(tmp_path / "silent", [])
    assert (bag / "metadata.yaml").is_file()
    with pytest.raises(BagError, match=r"silent: contains no messages"):
        BagReader(bag)
    assert bag_info_main([str(bag)]) == 2
    assert "silent: contains no messages" in capsys.readouterr().err


def test_reader_opens_a_single_mcap_file(tmp_path):
    bag = _good_bag(tmp_path)
    (mcap_file,) = bag.glob("*.mcap")
    with BagReader(mcap_file) as reader:
        assert reader.frame_count == 3 and reader.storage == "mcap"


# --- atomic writing -------------------------------------------------------------------------

def test_make_bag_refuses_to_overwrite_unless_forced(tmp_path, image_folder, capsys):
    folder, _ = image_folder
    out = _good_bag(tmp_path)
    before = sorted((p.name, p.stat().st_size) for p in out.iterdir())
    assert make_bag_main([str(out), "--images", str(folder), "--quiet"]) == 2
    assert "already exists; refusing to overwrite" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_size) for p in out.iterdir()) == before
    assert make_bag_main([str(out), "--images", str(folder), "--force", "--quiet"]) == 0
    assert len(_camera_frames(out)) == 3 and _camera_frames(out)[0].image.shape == (24, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "good"]


def test_force_never_replaces_something_that_is_not_a_bag(tmp_path, image_folder):
    folder, _ = image_folder
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert make_bag_main([str(precious), "--images", str(folder), "--force", "--quiet"]) == 2
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_failure_midway_leaves_no_output(tmp_path, image_folder, capsys):
    folder, _ = image_folder
    (folder / "frame_001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out" / "bag"
    assert make_bag_main([str(out), "--images", str(folder), "--quiet"]) == 2
    assert "frame_001.png" in capsys.readouterr().err
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []


def test_bag_writer_creates_connections_on_first_use_and_aborts_cleanly(tmp_path):
    image = image_message(np.full((2, 3), 7, np.uint8), "mono8", START_NS, "cam")
    raw = serialize(image)
    with BagWriter(tmp_path / "rec", storage="sqlite3") as bag:
        bag.write("/a", IMAGE, START_NS, raw)
        bag.write("/a", IMAGE, START_NS + 10, raw)
        bag.write_message("/b", image, START_NS + 5)
    with Reader(tmp_path / "rec") as reader:
        assert {t: i.msgcount for t, i in reader.topics.items()} == {"/a": 2, "/b": 1}
        assert [(c.topic, t) for c, t, _ in reader.messages()] == [("/a", START_NS), ("/b", START_NS + 5),
                                                                    ("/a", START_NS + 10)]
        assert all(bytes(r) == raw for _, _, r in reader.messages())

    with pytest.raises(RuntimeError, match="boom"):
        with BagWriter(tmp_path / "aborted") as bag:
            bag.write("/a", IMAGE, START_NS, raw)
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]
    with pytest.raises(BagError, match="not in the typestore"):
        with BagWriter(tmp_path / "unknown") as bag:
            bag.write("/x", "foo_msgs/msg/Bar", START_NS, raw)
    assert not (tmp_path / "unknown").exists()


@pytest.mark.parametrize("options, message", [
    ({"rate": 0}, "rate must be a positive"),
    ({"resize": (0, 0)}, "resize needs"),
    ({"jpeg_quality": 0, "compressed": "jpeg"}, "jpeg_quality must be in 1..100"),
    ({"start_ns": -1}, "start time must be >= 0"),
])
def test_bad_write_options_are_refused_before_writing(tmp_path, options, message):
    with pytest.raises(BagError, match=message):
        write_bag([SourceFrame(np.zeros((2, 2, 3), np.uint8), "x")], tmp_path / "bag", **options)
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_a_missing_input(tmp_path, capsys):
    assert make_bag_main([str(tmp_path / "bag"), "--video", str(tmp_path / "none.mp4"), "--quiet"]) == 2
    assert "none.mp4: file not found" in capsys.readouterr().err
    assert make_bag_main([str(tmp_path / "bag"), "--dataset", "seg_folder", "--dataset-option", "image_dir=/no",
                          "--quiet"]) == 2
    assert "cannot build it" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_exit_codes_follow_the_project_scheme(tmp_path, image_folder, monkeypatch, capsys):
    """0 written; 2 bad arguments or input (argparse's usage errors too); 1 a write that fails while running."""
    import errno

    from mtl_perception.bags import writer

    folder, _ = image_folder
    with pytest.raises(SystemExit) as usage:
        make_bag_main([str(tmp_path / "bag"), "--images", str(folder), "--rate", "fast"])
    assert usage.value.code == 2
    assert bag_info_main([str(tmp_path / "no_such_bag")]) == 2
    assert "no_such_bag" in capsys.readouterr().err

    def disk_full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.BagWriter, "write", disk_full)
    assert make_bag_main([str(tmp_path / "bag"), "--images", str(folder), "--quiet"]) == 1
    assert "writing" in capsys.readouterr().err and not (tmp_path / "bag").exists()
    monkeypatch.undo()
    assert make_bag_main([str(tmp_path / "bag"), "--images", str(folder), "--quiet"]) == 0
    assert bag_info_main([str(tmp_path / "bag")]) == 0
