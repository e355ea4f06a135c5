"""Datasets, joint augmentation and interleaved batching (plain PyTorch, no ROS).

Every dataset returns ``(image, target)``: a uint8 RGB ``tv_tensors.Image`` [3,H,W] and a dict
holding only the keys the sample is labelled for (``boxes``/``labels``/``difficult``,
``mask``) plus ``image_id``; see :mod:`mtl_perception.data.base`.
"""

from .aerial import (
    AerialSplits,
    DeepForestTrees,
    SolarisBuildings,
    aerial_sample_splits,
    deepforest_tree_split,
    package_data_dir,
    solaris_building_split,
)
from .base import IGNORE_INDEX, LabelledImageDataset, detection_fields, mask_field
from .build import build_dataset, build_interleaved
from .class_map import ClassMap, LabelMapping, load_class_map, map_classes
from .coco import CocoDetection
from .collate import collate_batch
from .errors import CorruptImageError, DatasetFormatError
from .sampler import InterleavedBatchSampler, split_batch_size
from .sdd import SDD_CLASSES, StanfordDrone, parse_sdd_annotations
from .seg_folder import SegmentationFolder
from .stats import summarize_dataset
from .tiling import TiledDataset, tile_starts
from .transforms import AugmentationConfig, JointTransform, build_transforms
from .voc import VOC_DETECTION_CLASSES, VOC_SEGMENTATION_CLASSES, PascalVOC, voc_palette
from .voc_xml import parse_voc_xml

__all__ = [
    "AerialSplits", "AugmentationConfig", "ClassMap", "CocoDetection", "CorruptImageError", "DatasetFormatError",
    "DeepForestTrees", "IGNORE_INDEX", "InterleavedBatchSampler", "JointTransform", "LabelMapping",
    "LabelledImageDataset", "PascalVOC", "SDD_CLASSES", "SegmentationFolder", "SolarisBuildings", "StanfordDrone",
    "TiledDataset", "VOC_DETECTION_CLASSES", "VOC_SEGMENTATION_CLASSES", "aerial_sample_splits", "build_dataset",
    "build_interleaved", "build_transforms", "collate_batch", "deepforest_tree_split", "detection_fields",
    "load_class_map", "map_classes", "mask_field", "package_data_dir", "parse_sdd_annotations", "parse_voc_xml",
    "solaris_building_split", "split_batch_size", "summarize_dataset", "tile_starts", "voc_palette",
]
