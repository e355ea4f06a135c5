"""Which model classes a dataset's labels index, per task: read by training and evaluation alike."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

TASK_CLASS_ATTRIBUTES = {"segmentation": "seg_classes", "detection": "det_classes"}


def dataset_class_names(dataset: Dataset) -> dict[str, list[str]]:
    """The model class names a dataset's labels index, per task it is labelled for.

    Looks through wrappers (``base``, ``dataset``, ``datasets``) for ``seg_classes`` /
    ``det_classes`` (or the ``det_mapping`` / ``mask_decoder`` they come from).
    """
    found: dict[str, list[str]] = {}
    pending: list[Any] = [dataset]
    while pending:
        node = pending.pop(0)
        for task, attribute in TASK_CLASS_ATTRIBUTES.items():
            names = getattr(node, attribute, None)
            if names is None and task == "detection" and getattr(node, "det_mapping", None) is not None:
                names = node.det_mapping.target_names
            if names is None and task == "segmentation" and getattr(node, "mask_decoder", None) is not None:
                names = getattr(node.mask_decoder, "target_names", None) or getattr(node.mask_decoder, "seg_classes", None)
            if names is not None and task not in found:
                found[task] = list(names)
        for child_name in ("base", "dataset"):
            child = getattr(node, child_name, None)
            if isinstance(child, Dataset):
                pending.append(child)
        pending.extend(d for d in getattr(node, "datasets", []) if isinstance(d, Dataset))
    return found
