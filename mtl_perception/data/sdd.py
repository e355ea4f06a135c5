"""Stanford Drone Dataset (SDD): detection-only frames of drone videos.

Layout::

    <root>/annotations/<scene>/<video>/annotations.txt
    <root>/videos/<scene>/<video>/video.mov                      (frame_source 'video')
    <root>/frames/<scene>/<video>/<frame:06d>.jpg                (frame_source 'frames')

``annotations.txt`` has one box per line, space separated:
``track_id xmin ymin xmax ymax frame lost occluded generated "label"``.

Samples are frames ``0, stride, 2*stride, ...`` up to the last annotated frame of each video
(capped by the video's frame count). With ``frame_source='frames'`` every sampled frame file
must exist (extract them with the same stride, named by the pattern above).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .base import LabelledImageDataset, JointTransformFn, Sample, detection_fields
from .class_map import ClassMap, detection_mapping, load_class_map
from .errors import CorruptImageError, DatasetFormatError
from .image_files import read_image_size, read_rgb_image, require_dir, require_file, rgb_array_to_image

SDD_CLASSES = ("Biker", "Pedestrian", "Skater", "Cart", "Car", "Bus")
SDD_CLASS_MAP = ClassMap(name="sdd", detection=SDD_CLASSES)
DEFAULT_FRAME_PATTERN = "frames/{scene}/{video}/{frame:06d}.jpg"
FRAME_SOURCES = ("auto", "frames", "video")


@dataclass(frozen=True)
class SddAnnotations:
    """Parsed ``annotations.txt``: one row per (track, frame).

    Attributes:
        boxes: float32 [M,4] XYXY.  frames: int64 [M].  lost/occluded/generated: bool [M].
        names: class name per row.
    """

    boxes: np.ndarray
    frames: np.ndarray
    lost: np.ndarray
    occluded: np.ndarray
    generated: np.ndarray
    names: np.ndarray


def parse_sdd_annotations(path: str | Path) -> SddAnnotations:
    """Read one SDD ``annotations.txt``.

    Raises:
        FileNotFoundError: missing file.
        DatasetFormatError: a line without 10 fields, non-numeric values or an inverted box
            (the message names file and line number).
    """
    path = require_file(path, "SDD annotation file")
    boxes, frames, flags, names = [], [], [], []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 10:
                raise DatasetFormatError(
                    f"{path}:{line_number}: expected 10 space-separated fields "
                    f"(track_id xmin ymin xmax ymax frame lost occluded generated label), got {len(fields)}"
                )
            try:
                box = [float(v) for v in fields[1:5]]
                frame, lost, occluded, generated = (int(v) for v in fields[5:9])
            except ValueError:
                raise DatasetFormatError(f"{path}:{line_number}: non-numeric field in {line.strip()!r}") from None
            if box[2] < box[0] or box[3] < box[1]:
                raise DatasetFormatError(f"{path}:{line_number}: inverted box {box}")
            boxes.append(box)
            frames.append(frame)
            flags.append((lost, occluded, generated))
            names.append(fields[9].strip('"'))
    flags_array = np.array(flags, dtype=bool).reshape(-1, 3)
    return SddAnnotations(
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        frames=np.array(frames, dtype=np.int64),
        lost=flags_array[:, 0],
        occluded=flags_array[:, 1],
        generated=flags_array[:, 2],
        names=np.array(names, dtype=object),
    )


@dataclass(frozen=True)
class _FrameRecord:
    video_index: int
    frame: int
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class _Video:
    scene: str
    video: str
    video_path: Path | None  # None: read pre-extracted frames
    size: tuple[int, int] | None = None  # (H, W) of the video
    frame_count: int = 0  # 0 when OpenCV cannot tell


class StanfordDrone(LabelledImageDataset):
    """Stanford Drone Dataset frames with their boxes (detection only).

    Args:
        root: dataset root holding ``annotations/`` and ``videos/`` and/or ``frames/``.
        videos: ``'scene/videoN'`` names to use (default: every annotated video found).
        frame_stride: use every ``frame_stride``-th frame.
        frame_source: ``'frames'`` (pre-extracted images), ``'video'`` (decode ``video.mov``
            with OpenCV) or ``'auto'`` (frames when that video's frame folder exists).
        frame_pattern: path of an extracted frame relative to ``root``, formatted with
            ``scene``, ``video`` and ``frame``.
        drop_lost: drop boxes flagged lost (outside the view); on by default.
        drop_occluded: drop boxes flagged occluded.
        drop_generated: drop interpolated (generated) boxes.
        skip_empty_frames: leave out frames without boxes (otherwise they are samples with 0 boxes).
        class_map: class map (YAML path / mapping / ClassMap); default the six SDD classes.
        det_classes: the model's detection classes (default the SDD classes after renaming).
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        root: str | Path,
        videos: Sequence[str] | None = None,
        frame_stride: int = 30,
        frame_source: str = "auto",
        frame_pattern: str = DEFAULT_FRAME_PATTERN,
        drop_lost: bool = True,
        drop_occluded: bool = False,
        drop_generated: bool = False,
        skip_empty_frames: bool = False,
        class_map: ClassMap | str | Path | dict | None = None,
        det_classes: Sequence[str] | None = None,
        transforms: JointTransformFn | None = None,
    ) -> None:
        super().__init__(transforms)
        if frame_source not in FRAME_SOURCES:
            raise ValueError(f"frame_source must be one of {FRAME_SOURCES}, got {frame_source!r}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.root = require_dir(root, "SDD root")
        annotations_dir = require_dir(self.root / "annotations", "SDD annotations directory")
        self.frame_pattern = frame_pattern
        self.class_map = load_class_map(class_map, SDD_CLASS_MAP)
        self.det_mapping = detection_mapping(self.class_map, det_classes)
        if videos is None:
            videos = sorted(str(p.parent.relative_to(annotations_dir)) for p in annotations_dir.glob("*/*/annotations.txt"))
            if not videos:
                raise FileNotFoundError(f"no annotations/<scene>/<video>/annotations.txt under {self.root}")
        self.videos: list[_Video] = []
        self.records: list[_FrameRecord] = []
        for name in videos:
            scene, sep, video = name.partition("/")
            if not sep or "/" in video:
                raise ValueError(f"SDD video must be named 'scene/videoN', got {name!r}")
            annotations = parse_sdd_annotations(annotations_dir / scene / video / "annotations.txt")
            source = self._open_video(scene, video, frame_source)
            keep = np.ones(len(annotations.frames), dtype=bool)
            if drop_lost:
                keep &= ~annotations.lost
            if drop_occluded:
                keep &= ~annotations.occluded
            if drop_generated:
                keep &= ~annotations.generated
            self._add_frames(len(self.videos), source, annotations, keep, frame_stride, skip_empty_frames)
            self.videos.append(source)
        if not self.records:
            raise ValueError(f"StanfordDrone: no frames selected under {self.root} (videos {list(videos)})")
        self._captures: dict[int, tuple[cv2.VideoCapture, int]] = {}

    def _frame_path(self, scene: str, video: str, frame: int) -> Path:
        return self.root / self.frame_pattern.format(scene=scene, video=video, frame=frame)

    def _open_video(self, scene: str, video: str, frame_source: str) -> _Video:
        frames_dir = self._frame_path(scene, video, 0).parent
        if frame_source == "frames" or (frame_source == "auto" and frames_dir.is_dir()):
            require_dir(frames_dir, f"SDD frame directory of {scene}/{video}")
            return _Video(scene, video, None)
        video_path = require_file(self.root / "videos" / scene / video / "video.mov", f"SDD video of {scene}/{video}")
        capture = cv2.VideoCapture(str(video_path))
        try:
            if not capture.isOpened():
                raise DatasetFormatError(f"{video_path}: OpenCV cannot open this video")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        finally:
            capture.release()
        return _Video(scene, video, video_path, size, max(count, 0))

    def _add_frames(
        self, video_index: int, source: _Video, annotations: SddAnnotations, keep: np.ndarray, stride: int, skip_empty: bool
    ) -> None:
        index_of = self.det_mapping.index_by_name()
        unknown = sorted(set(annotations.names.tolist()) - set(index_of))
        if unknown:
            raise DatasetFormatError(
                f"annotations of {source.scene}/{source.video}: unknown classes {unknown}; known {list(index_of)}"
            )
        labels = np.array([index_of[n] for n in annotations.names], dtype=np.int64).reshape(-1)
        keep = keep & (labels >= 0)
        last_frame = int(annotations.frames.max(initial=-1))
        if source.frame_count > 0:
            last_frame = min(last_frame, source.frame_count - 1)
        boxes, frames, labels = annotations.boxes[keep], annotations.frames[keep], labels[keep]
        order = np.argsort(frames, kind="stable")
        boxes, frames, labels = boxes[order], frames[order], labels[order]
        missing = []
        for frame in range(0, last_frame + 1, stride):
            lo, hi = np.searchsorted(frames, frame, "left"), np.searchsorted(frames, frame, "right")
            if hi == lo and skip_empty:
                continue
            if source.video_path is None:
                path = self._frame_path(source.scene, source.video, frame)
                if not path.is_file():
                    missing.append(path)
                    continue
            self.records.append(_FrameRecord(video_index, frame, boxes[lo:hi].copy(), labels[lo:hi].copy()))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} extracted frames of {source.scene}/{source.video} are missing, e.g. {missing[0]} "
                f"(frames are sampled every {stride} frames and named by {self.frame_pattern!r})"
            )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_captures"] = {}  # OpenCV captures cannot be pickled into DataLoader workers
        return state

    def __len__(self) -> int:
        return len(self.records)

    def image_id(self, index: int) -> str:
        record = self.records[index]
        source = self.videos[record.video_index]
        return f"{source.scene}/{source.video}/{record.frame:06d}"

    def image_size(self, index: int) -> tuple[int, int]:
        record = self.records[index]
        source = self.videos[record.video_index]
        if source.video_path is not None:
            return source.size  # type: ignore[return-value]
        return read_image_size(self._frame_path(source.scene, source.video, record.frame))

    def _read_video_frame(self, video_index: int, frame: int) -> np.ndarray:
        source = self.videos[video_index]
        capture, next_frame = self._captures.get(video_index, (None, -1))
        if capture is None:
            capture = cv2.VideoCapture(str(source.video_path))
            next_frame = 0
        if frame < next_frame or frame - next_frame > 64:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
            next_frame = frame
        ok = True
        while ok and next_frame < frame:
            ok = capture.grab()
            next_frame += 1
        ok, bgr = capture.read() if ok else (False, None)
        if not ok or bgr is None:
            capture.release()
            self._captures.pop(video_index, None)
            raise CorruptImageError(f"{source.video_path}#frame={frame}", "OpenCV could not decode this frame")
        self._captures[video_index] = (capture, frame + 1)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_sample(self, index: int) -> Sample:
        record = self.records[index]
        source = self.videos[record.video_index]
        if source.video_path is not None:
            image = rgb_array_to_image(self._read_video_frame(record.video_index, record.frame))
        else:
            image = read_rgb_image(self._frame_path(source.scene, source.video, record.frame))
        target = {"image_id": self.image_id(index)}
        target.update(detection_fields(record.boxes, record.labels, tuple(image.shape[-2:])))
        return image, target
