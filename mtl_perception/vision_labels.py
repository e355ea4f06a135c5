"""The one class-id convention of every LabelInfo and Detection2D in the project (ROS-free).

* One ``vision_msgs/LabelInfo`` per task, each with class ids ``0..N-1`` = the model's class
  indices, on the topic next to that task's output: ``segmentation/label_info`` (the id is the
  pixel value of the mono8 ``segmentation`` mask) and ``detections/label_info``. Bags' ground
  truth uses the same layout under ``/ground_truth/`` (``/ground_truth/detections/label_info``).
* A ``Detection2D`` hypothesis' ``class_id`` is the class name (``class_id_format: name``, the
  default) or ``str(index)`` (``index``), the id in ``detections/label_info``.

The nodes, overlay_node, make-bag, the bag reader and replay evaluation all go through the
functions here. They read any object with the message's fields, so rclpy messages and rosbags'
dataclasses alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SEGMENTATION_LABEL_INFO_TOPIC = "segmentation/label_info"
DETECTION_LABEL_INFO_TOPIC = "detections/label_info"
CLASS_ID_FORMATS = ("name", "index")


def detection_class_id(label: int, names: Sequence[str], class_id_format: str) -> str:
    """``class_id`` string of a detection: its class name, or ``str(index)``."""
    if class_id_format == "name":
        return names[label] if 0 <= label < len(names) else str(label)
    return str(int(label))


def detection_labels(class_ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Class indices of ``class_id`` strings in either format (name or ``str(index)``); -1 for neither."""
    index_of = {name: i for i, name in enumerate(names)}
    labels = []
    for class_id in class_ids:
        label = index_of.get(class_id)
        if label is None and class_id.isdigit() and int(class_id) < len(names):
            label = int(class_id)
        labels.append(-1 if label is None else label)
    return np.asarray(labels, dtype=np.int64)


def label_info_to_names(message: Any) -> tuple[str, ...]:
    """Class names of a ``LabelInfo`` in class id order.

    Raises:
        ValueError: the ids are not ``0..N-1`` without repeats (not this convention).
    """
    by_id = {int(entry.class_id): entry.class_name for entry in message.class_map}
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) != len(message.class_map):
        raise ValueError(f"LabelInfo class ids must be 0..N-1 without repeats, got {sorted(by_id)}")
    return tuple(by_id[i] for i in range(len(by_id)))


def detections_to_arrays(message: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Boxes, class ids and scores of a ``Detection2DArray`` (the best hypothesis of each detection).

    Returns:
        ``(boxes [N, 4] float64 XYXY, class_ids list of N str, scores [N] float64)``; a detection
        without results gets class id ``''`` and score 0.
    """
    boxes = np.zeros((len(message.detections), 4), dtype=np.float64)
    class_ids, scores = [], np.zeros(len(message.detections), dtype=np.float64)
    for i, detection in enumerate(message.detections):
        center, half_w, half_h = detection.bbox.center.position, detection.bbox.size_x / 2, detection.bbox.size_y / 2
        boxes[i] = (center.x - half_w, center.y - half_h, center.x + half_w, center.y + half_h)
        if detection.results:
            best = max(detection.results, key=lambda r: r.hypothesis.score).hypothesis
            class_ids.append(best.class_id)
            scores[i] = best.score
        else:
            class_ids.append("")
    return boxes, class_ids, scores
