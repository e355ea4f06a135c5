"""make-bag --merge-cameras: camera bags -> one bag with an image topic per camera (no ROS needed)."""

from __future__ import annotations

import numpy as np

from mtl_perception.bags.make_bag import main as make_bag
from mtl_perception.bags.multicam_bag import camera_topics
from mtl_perception.bags.reader import open_bag
from mtl_perception.bags.sources import SourceFrame
from mtl_perception.bags.frames_to_bag import write_bag
from mtl_perception.exit_codes import EXIT_BAD_INPUT, EXIT_OK

START_NS = 1_700_000_000 * 10**9


def _frames(count: int, height: int, width: int, value: int) -> list[SourceFrame]:
    return [SourceFrame(np.full((height, width, 3), value + i, np.uint8), f"{value}_{i}") for i in range(count)]


def test_camera_bags_merge_into_one_bag_with_a_topic_per_camera(tmp_path):
    write_bag(_frames(3, 20, 30, 10), tmp_path / "front", rate=10.0, start_ns=5 * 10**9, frame_id="front_optical")
    write_bag(_frames(2, 40, 16, 100), tmp_path / "down", rate=5.0, start_ns=9 * 10**9, frame_id="down_optical")
    code = make_bag([str(tmp_path / "rig"), "--merge-cameras", f"/rig/front/image={tmp_path / 'front'}",
                     f"rig/down/image={tmp_path / 'down'}", "--start-time", str(START_NS / 1e9), "--quiet"])
    assert code == EXIT_OK
    assert camera_topics(tmp_path / "rig") == ["/rig/front/image", "/rig/down/image"]
    expected = {"/rig/front/image": ([START_NS, START_NS + 10**8, START_NS + 2 * 10**8], "front_optical", (20, 30), 10),
                "/rig/down/image": ([START_NS, START_NS + 2 * 10**8], "down_optical", (40, 16), 100)}
    for topic, (stamps, frame_id, size, value) in expected.items():
        with open_bag(tmp_path / "rig", camera_topic=topic) as reader:
            frames = list(reader.frames())
        assert [f.stamp_ns for f in frames] == stamps and [f.bag_time_ns for f in frames] == stamps
        assert {f.frame_id for f in frames} == {frame_id}
        for index, frame in enumerate(frames):
            assert frame.image.shape[:2] == size and (frame.image == value + index).all()
    with open_bag(tmp_path / "rig") as reader:
        assert reader.camera_topic == "/rig/front/image"  # single-camera tools read the first


def test_a_malformed_camera_source_is_refused_and_nothing_is_written(tmp_path, capsys):
    write_bag(_frames(1, 8, 8, 0), tmp_path / "front", rate=10.0)
    assert make_bag([str(tmp_path / "rig"), "--merge-cameras", str(tmp_path / "front")]) == EXIT_BAD_INPUT
    assert "is not TOPIC=BAG" in capsys.readouterr().err
    assert make_bag([str(tmp_path / "rig"), "--merge-cameras", f"/a={tmp_path / 'front'}",
                     f"/b={tmp_path / 'missing'}"]) == EXIT_BAD_INPUT
    assert not (tmp_path / "rig").exists()
