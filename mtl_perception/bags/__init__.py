"""Rosbag2 tools on the ``rosbags`` library (no rclpy, no ROS message packages).

* :mod:`.typestore`: typestore with vision_msgs + InferenceStats, message builders/decoders;
* :mod:`.writer`: :class:`BagWriter`, atomic bag writing (temporary folder, then rename);
* :mod:`.reader`: :class:`BagReader` / :func:`open_bag` for replay evaluation, :class:`BagError`;
* :mod:`.frames_to_bag` (:func:`write_bag`), :mod:`.make_bag` (``make-bag``), :mod:`.bag_info` (``bag-info``),
  :mod:`.demo` (demo bag);
* :mod:`.topics`: topic names and metadata keys of the ground truth.
"""

from .errors import BagError
from .reader import BagReader, CameraFrame, GroundTruthBoxes, TopicInfo, open_bag, open_rosbag
from .topics import (
    DEFAULT_CAMERA_TOPIC,
    GT_DETECTION_LABELS_TOPIC,
    GT_DETECTIONS_TOPIC,
    GT_SEGMENTATION_LABELS_TOPIC,
    GT_SEGMENTATION_TOPIC,
)
from .typestore import (
    bag_typestore,
    compressed_image_message,
    deserialize,
    detections_message,
    detections_to_arrays,
    image_message,
    label_info_message,
    label_info_to_names,
    mask_message,
    serialize,
)
from .writer import BagWriter

__all__ = [
    "BagError", "BagReader", "BagWriter", "CameraFrame", "DEFAULT_CAMERA_TOPIC", "GT_DETECTIONS_TOPIC",
    "GT_DETECTION_LABELS_TOPIC", "GT_SEGMENTATION_LABELS_TOPIC", "GT_SEGMENTATION_TOPIC", "GroundTruthBoxes",
    "TopicInfo", "bag_typestore", "compressed_image_message", "deserialize", "detections_message",
    "detections_to_arrays", "image_message", "label_info_message", "label_info_to_names", "mask_message",
    "open_bag", "open_rosbag", "serialize",
]
