"""Topic names and metadata keys shared by the bag writer, reader and summary.

Ground truth is stored beside each camera frame with the frame's header stamp and bag time:
boxes as ``vision_msgs/Detection2DArray`` (class id = class name; ``str(index)`` is read too) and masks as ``mono8``
``sensor_msgs/Image`` (pixel = class index, 255 = ignore), only for frames labelled for that
task. Each task's class list is a ``vision_msgs/LabelInfo`` (ids 0..N-1, the convention of
:mod:`mtl_perception.vision_labels`, the same the nodes publish) written once at the start, and is
repeated as JSON in the bag's ``metadata.yaml`` ``custom_data``.
"""

DEFAULT_CAMERA_TOPIC = "/camera/image_raw"
GT_DETECTIONS_TOPIC = "/ground_truth/detections"
GT_SEGMENTATION_TOPIC = "/ground_truth/segmentation"
GT_DETECTION_LABELS_TOPIC = "/ground_truth/detections/label_info"
GT_SEGMENTATION_LABELS_TOPIC = "/ground_truth/segmentation/label_info"
GROUND_TRUTH_PREFIX = "/ground_truth/"

CUSTOM_CAMERA_TOPIC = "mtl_perception.camera_topic"
CUSTOM_DETECTION_CLASSES = "mtl_perception.detection_classes"
CUSTOM_SEGMENTATION_CLASSES = "mtl_perception.segmentation_classes"
CUSTOM_SOURCE = "mtl_perception.source"


def compressed_topic(topic: str) -> str:
    """The image_transport name of the compressed stream of ``topic``."""
    return topic.rstrip("/") + "/compressed"
