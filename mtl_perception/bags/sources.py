"""Frame sources for make-bag: an image folder, a video file, or an annotated dataset.

Every source iterates :class:`SourceFrame` objects (RGB image at its original size plus the
ground truth the sample is labelled for) and says which class names its labels index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import yaml

from mtl_perception.data.errors import CorruptImageError
from mtl_perception.data.image_files import IMAGE_EXTENSIONS, read_rgb_image

from .errors import BagError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFrame:
    """One frame to write.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        name: where it came from (file name, ``video.mp4#12``, dataset image id).
        boxes: [N, 4] float32 XYXY pixels, or None when not labelled for detection.
        labels: [N] int64 class indices of ``boxes`` (None with ``boxes``).
        mask: [H, W] uint8 class indices (255 = ignore), or None when not labelled for segmentation.
    """

    image: np.ndarray
    name: str
    boxes: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None


class FrameSource:
    """Base of the sources: iterable of :class:`SourceFrame`.

    Attributes:
        description: one line saying what the source is (stored in the bag metadata).
        detection_classes: names the box labels index, or None.
        segmentation_classes: names the mask values index, or None.
        default_rate: the source's own frame rate in Hz (videos), or None.
    """

    description = ""
    detection_classes: tuple[str, ...] | None = None
    segmentation_classes: tuple[str, ...] | None = None
    default_rate: float | None = None

    def __iter__(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class ImageFolderSource(FrameSource):
    """The images directly inside ``folder``, in file name order (no ground truth)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BagError(f"image folder {self.folder}: not a directory")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise BagError(f"image folder {self.folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.description = f"image folder {self.folder}"

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[SourceFrame]:
        for path in self.files:
            try:
                image = read_rgb_image(path)
            except CorruptImageError as error:
                raise BagError(f"image folder {self.folder}: {error}") from error
            yield SourceFrame(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), path.name)


class VideoSource(FrameSource):
    """Every frame of a video file decoded with OpenCV (no ground truth)."""

    def __init__(self, path: str | Path) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise BagError(f"video {self.path}: file not found")
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise BagError(f"video {self.path}: OpenCV cannot open it (not a video, or an unsupported codec)")
            fps = capture.get(cv2.CAP_PROP_FPS)
            self._frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.default_rate = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        self.description = f"video {self.path}"

    def __len__(self) -> int:
        return max(self._frame_count, 0)

    def __iter__(self) -> Iterator[SourceFrame]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yield SourceFrame(rgb, f"{self.path.name}#{index}")
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise BagError(f"video {self.path}: no frame could be decoded")


def _names(value: Any) -> tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return None
    names = tuple(str(v) for v in value)
    return names or None


def _attribute(obj: Any, *chain: str) -> Any:
    for name in chain:
        try:
            obj = getattr(obj, name, None)
        except Exception:
            return None
        if obj is None:
            return None
    return obj


def dataset_class_names(dataset: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``(detection_classes, segmentation_classes)`` of a dataset from this project's readers.

    Looks at ``det_classes`` / ``det_mapping.target_names`` and ``seg_classes`` /
    ``mask_decoder.target_names``, through ``base`` of wrapping datasets (tiling).
    """
    detection = segmentation = None
    node = dataset
    while node is not None:
        detection = (
            detection
            or _names(_attribute(node, "det_classes"))
            or _names(_attribute(node, "det_mapping", "target_names"))
        )
        segmentation = (
            segmentation
            or _names(_attribute(node, "seg_classes"))
            or _names(_attribute(node, "mask_decoder", "target_names"))
        )
        node = _attribute(node, "base")
    return detection, segmentation


class DatasetSource(FrameSource):
    """The samples of a dataset in the sample contract of :mod:`mtl_perception.data`, untransformed.

    Args:
        dataset: the dataset; its ``transforms`` must be None so images keep their original size.
        description: what it is, for the bag metadata.
        detection_classes: override the class names found on the dataset.
        segmentation_classes: override the class names found on the dataset.
    """

    def __init__(
        self,
        dataset: Any,
        description: str = "dataset",
        detection_classes: Sequence[str] | None = None,
        segmentation_classes: Sequence[str] | None = None,
    ) -> None:
        if getattr(dataset, "transforms", None) is not None:
            raise BagError(
                f"{description}: the dataset has transforms; bags need the original images (transforms=None)"
            )
        if len(dataset) == 0:
            raise BagError(f"{description}: the dataset is empty")
        self.dataset = dataset
        self.description = description
        found_detection, found_segmentation = dataset_class_names(dataset)
        self.detection_classes = tuple(detection_classes) if detection_classes else found_detection
        self.segmentation_classes = tuple(segmentation_classes) if segmentation_classes else found_segmentation

    def __len__(self) -> int:
        return len(self.dataset)

    def _sample(self, index: int):
        load = getattr(self.dataset, "load_sample", None)
        try:
            return load(index) if load is not None else self.dataset[index]
        except CorruptImageError as error:
            raise BagError(f"{self.description}: sample {index}: {error}") from error

    def __iter__(self) -> Iterator[SourceFrame]:
        for index in range(len(self.dataset)):
            image, target = self._sample(index)
            image = np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0))
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise BagError(
                    f"{self.description}: sample {index} is not a uint8 RGB image ({image.dtype}, {image.shape})"
                )
            boxes = labels = mask = None
            if "boxes" in target:
                boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
                labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
            if "mask" in target:
                mask = np.asarray(target["mask"]).astype(np.uint8, copy=False)
            yield SourceFrame(image, str(target.get("image_id", index)), boxes, labels, mask)


def load_dataset_config(path: str | Path) -> dict:
    """A dataset config for :func:`~mtl_perception.data.build_dataset` from a YAML file: a mapping
    with ``type``, or with a ``dataset`` mapping holding it."""
    path = Path(path)
    if not path.is_file():
        raise BagError(f"dataset config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise BagError(f"dataset config {path}: invalid YAML: {error}") from error
    if isinstance(data, Mapping) and "type" not in data and isinstance(data.get("dataset"), Mapping):
        data = data["dataset"]
    if not isinstance(data, Mapping) or "type" not in data:
        raise BagError(f"dataset config {path}: expected a mapping with 'type' (or a 'dataset' mapping holding one)")
    return dict(data)


def parse_options(options: Sequence[str]) -> dict:
    """``['key=value', ...]`` into a dict; values are parsed as YAML (numbers, lists, ...)."""
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise BagError(f"dataset option {option!r}: expected key=value")
        try:
            parsed[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as error:
            raise BagError(f"dataset option {option!r}: value is not valid YAML: {error}") from error
    return parsed


def dataset_source(
    cfg: Mapping[str, Any],
    description: str | None = None,
    detection_classes: Sequence[str] | None = None,
    segmentation_classes: Sequence[str] | None = None,
) -> DatasetSource:
    """A :class:`DatasetSource` of ``build_dataset(cfg)`` with no transforms."""
    from mtl_perception.data import build_dataset

    description = description or f"dataset {dict(cfg)}"
    try:
        dataset = build_dataset(cfg, transforms=None)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise BagError(f"{description}: cannot build it: {error}") from error
    return DatasetSource(dataset, description, detection_classes, segmentation_classes)


def resize_frame(frame: SourceFrame, width: int, height: int) -> SourceFrame:
    """``frame`` resized to ``width`` x ``height`` (0 for one of them keeps the aspect ratio);
    boxes are scaled, masks resized with nearest neighbour."""
    import cv2

    old_height, old_width = frame.image.shape[:2]
    if width <= 0 and height <= 0:
        raise ValueError(f"resize needs a width or a height > 0, got {width}x{height}")
    if width <= 0:
        width = max(1, round(old_width * height / old_height))
    if height <= 0:
        height = max(1, round(old_height * width / old_width))
    if (width, height) == (old_width, old_height):
        return frame
    image = cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA)
    boxes = mask = None
    if frame.boxes is not None:
        scale = np.array([width / old_width, height / old_height] * 2, dtype=np.float32)
        boxes = (frame.boxes * scale).astype(np.float32)
    if frame.mask is not None:
        mask = cv2.resize(frame.mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return replace(frame, image=image, boxes=boxes, mask=mask)
