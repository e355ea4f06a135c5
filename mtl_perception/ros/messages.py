"""Predictor outputs → ROS messages (vision_msgs 4.x, sensor_msgs, InferenceStats)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                             ObjectHypothesisWithPose, VisionClass)

from mtl_perception.ros.image_msg_builders import array_to_image_msg
from mtl_perception.vision_labels import detection_class_id, detection_labels  # noqa: F401 (detection_labels: re-export)


def detections_msg(header, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   names: Sequence[str], class_id_format: str = "name") -> Detection2DArray:
    """Detection2DArray in input pixels, centre + size (vision_msgs 4.x), header copied."""
    msg = Detection2DArray(header=header)
    for box, score, label in zip(boxes, scores, labels):
        x0, y0, x1, y1 = (float(v) for v in box)
        bbox = BoundingBox2D(size_x=x1 - x0, size_y=y1 - y0)
        bbox.center.position.x = (x0 + x1) / 2.0
        bbox.center.position.y = (y0 + y1) / 2.0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = detection_class_id(int(label), names, class_id_format)
        hypothesis.hypothesis.score = float(score)
        # id stays empty: vision_msgs reserves it for the same object across messages (tracking).
        msg.detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox))
    return msg


def label_info_msg(header, class_names: Sequence[str], threshold: float = 0.0) -> LabelInfo:
    """LabelInfo of one task: class id ``i`` is ``class_names[i]`` (see :mod:`mtl_perception.vision_labels`).

    Args:
        header: header to copy.
        class_names: the task's class names, in model index order.
        threshold: the detection score threshold in use (0 for segmentation).
    """
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)])


def mask_msg(header, mask: np.ndarray):
    """mono8 class-index image at the input resolution."""
    return array_to_image_msg(np.ascontiguousarray(mask, dtype=np.uint8), "mono8", header)


def rgb_msg(header, image: np.ndarray):
    return array_to_image_msg(np.ascontiguousarray(image, dtype=np.uint8), "rgb8", header)
