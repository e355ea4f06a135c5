"""Predictor outputs → ROS messages (vision_msgs 4.x, sensor_msgs, InferenceStats)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                             ObjectHypothesisWithPose, VisionClass)

from mtl_perception.ros.image_msg_builders import array_to_image_msg

# Class ids in LabelInfo: segmentation classes use their mask value (0..255, the mono8
# `segmentation` image); detection classes start here, so the two never collide. With
# class_id_format "index", Detection2D hypotheses carry this same id as a string.
DETECTION_CLASS_ID_OFFSET = 256
CLASS_ID_FORMATS = ("name", "index")


def detection_class_id(label: int, names: Sequence[str], class_id_format: str) -> str:
    """``class_id`` string of a detection: its class name, or ``str(256 + index)``."""
    if class_id_format == "name":
        return names[label] if 0 <= label < len(names) else str(label)
    return str(DETECTION_CLASS_ID_OFFSET + int(label))


def detection_labels(class_ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Detection class indices of ``class_id`` strings, either convention (name or ``256 + index``);
    -1 for an id that is neither."""
    index_of = {name: i for i, name in enumerate(names)}
    labels = []
    for class_id in class_ids:
        label = index_of.get(class_id)
        if label is None and class_id.isdigit() and 0 <= int(class_id) - DETECTION_CLASS_ID_OFFSET < len(names):
            label = int(class_id) - DETECTION_CLASS_ID_OFFSET
        labels.append(-1 if label is None else label)
    return np.asarray(labels, dtype=np.int64)


def detections_msg(header, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   names: Sequence[str], class_id_format: str = "name") -> Detection2DArray:
    """Detection2DArray in input pixels, centre + size (vision_msgs 4.x), header copied."""
    msg = Detection2DArray(header=header)
    for index, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        bbox = BoundingBox2D(size_x=x1 - x0, size_y=y1 - y0)
        bbox.center.position.x = (x0 + x1) / 2.0
        bbox.center.position.y = (y0 + y1) / 2.0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = detection_class_id(int(label), names, class_id_format)
        hypothesis.hypothesis.score = float(score)
        msg.detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox, id=str(index)))
    return msg


def label_info_msg(header, class_names: dict[str, Sequence[str]], threshold: float) -> LabelInfo:
    """LabelInfo with both tasks' classes (see :data:`DETECTION_CLASS_ID_OFFSET`)."""
    msg = LabelInfo(header=header, threshold=float(threshold))
    for index, name in enumerate(class_names.get("segmentation", [])):
        msg.class_map.append(VisionClass(class_id=index, class_name=name))
    for index, name in enumerate(class_names.get("detection", [])):
        msg.class_map.append(VisionClass(class_id=DETECTION_CLASS_ID_OFFSET + index, class_name=name))
    return msg


def mask_msg(header, mask: np.ndarray):
    """mono8 class-index image at the input resolution."""
    return array_to_image_msg(np.ascontiguousarray(mask, dtype=np.uint8), "mono8", header)


def rgb_msg(header, image: np.ndarray):
    return array_to_image_msg(np.ascontiguousarray(image, dtype=np.uint8), "rgb8", header)
