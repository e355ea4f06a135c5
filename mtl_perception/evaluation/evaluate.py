"""Score a checkpoint on a dataset through the :class:`~mtl_perception.predictor.Predictor`.

Every sample goes through ``Predictor.predict`` at its original size, so the figures are
those of the deployed inference path (resize, network, postprocess). Segmentation is
scored with one dataset-wide confusion matrix (mIoU, as in Martí & Maki 2017), detection
with PASCAL VOC AP at IoU 0.5 and COCO mAP@[.5:.95]. Give datasets without transforms so
that images keep their original size.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..metrics import json_safe
from ..models.config import TASKS
from ..data.dataset_classes import dataset_class_names
from .report import latency_summary
from .scores import TaskScores, to_numpy

log = logging.getLogger(__name__)

# Above this the AP curves lose their low-score tail and mAP is underestimated.
HIGH_SCORE_THRESHOLD = 0.05


class EvaluationError(ValueError):
    """The dataset cannot be scored against the model (the message says why)."""


class ClassMismatchError(EvaluationError):
    """The dataset's class names differ from the checkpoint's for a task."""


class PredictorLike(Protocol):
    """What :func:`evaluate` needs of a predictor (:class:`~mtl_perception.predictor.Predictor` has it)."""

    tasks: tuple[str, ...]
    class_names: Mapping[str, Sequence[str]]

    def predict(self, image: np.ndarray) -> Any: ...


def evaluate(
    predictor: PredictorLike,
    dataset: Dataset,
    class_names: Mapping[str, Sequence[str]] | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every sample of ``dataset`` through ``predictor`` and score the checkpoint's tasks.

    Samples count for the tasks they are labelled for (``mask``: segmentation, ``boxes``:
    detection) among the predictor's tasks; VOC ``difficult`` boxes are neither positives
    nor false positives; detections and boxes lying mostly inside a sample's ``ignore_mask``
    (VisDrone's ignored regions) are dropped before matching; mask pixels 255 are ignored.
    A sample whose ``image_id`` was already seen is skipped: datasets hand out the next
    sample in place of an undecodable one.

    Args:
        predictor: a Predictor (or object with ``predict``, ``tasks``, ``class_names``);
            for mAP build it with a low score threshold (e.g. 0.01) and 100+ detections.
        dataset: samples ``(image uint8 [3, H, W], target)`` in the data sample contract.
        class_names: ``{task: names}`` the dataset's labels index; default read from the
            dataset (``seg_classes`` / ``det_classes``). Must equal the checkpoint's.
        max_images: score only the first ``max_images`` samples.
        progress: show a tqdm progress bar.

    Returns:
        JSON-safe dict (NaN → None): ``tasks``; ``num_images`` (predicted), ``num_unlabelled``
        (labelled for none of the tasks), ``num_skipped`` (repeats); ``latency_ms``
        (``count``, ``p50``, ``p90``, ``mean`` of ``timings.total_ms``); ``detection_params``
        when the predictor has them; and the accuracy figures under the keys of
        :mod:`mtl_perception.evaluation.scores` (``seg_miou``, ``det_voc_ap50``, ..., ``score``),
        the same keys as training validation.

    Raises:
        ClassMismatchError: the dataset's and the checkpoint's class names differ.
        EvaluationError: no sample is labelled for the checkpoint's tasks, a sample is not
            in the contract, or its labels are out of range (message names the sample).
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    tasks = tuple(t for t in TASKS if t in tuple(predictor.tasks))
    if not tasks:
        raise EvaluationError(f"the predictor has no task among {TASKS} (tasks {tuple(predictor.tasks)})")
    model_names = {task: list(predictor.class_names[task]) for task in tasks}
    if class_names is None:
        class_names = dataset_class_names(dataset)
    dataset_names = {task: list(names) for task, names in class_names.items()}
    for task in tasks:
        if task in dataset_names:
            _check_class_names(task, dataset_names[task], model_names[task])
    _warn_on_high_score_threshold(predictor)

    scores = TaskScores(tasks, model_names)
    latencies: list[float] = []
    seen_ids: set = set()
    skipped = unlabelled = 0
    total = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in tqdm(range(total), desc="evaluate", unit="img", disable=not progress, leave=False):
        try:
            image, target = dataset[index]
        except RuntimeError as exc:  # LabelledImageDataset: every remaining sample is undecodable
            raise EvaluationError(str(exc)) from exc
        image_id = target.get("image_id", index) if isinstance(target, Mapping) else index
        if image_id in seen_ids:
            skipped += 1
            continue
        seen_ids.add(image_id)
        labelled = scores.labelled_tasks(target)
        if not labelled:
            unlabelled += 1
            continue
        for task in labelled:
            if scores.num_images[task] == 0 and task not in dataset_names:
                raise EvaluationError(f"cannot tell which {task} classes the dataset's labels index (it has no "
                                      f"{'seg_classes' if task == 'segmentation' else 'det_classes'}); "
                                      "pass class_names")
        prediction = predictor.predict(_image_array(image, image_id))
        latencies.append(float(prediction.timings.total_ms))
        try:
            scores.add(image_id, prediction, target)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"sample {image_id!r}: {exc}") from exc

    if not any(scores.num_images.values()):
        raise EvaluationError(f"no sample of the dataset is labelled for the checkpoint's tasks {list(tasks)} "
                              f"({total} samples looked at)")
    result: dict[str, Any] = {
        "tasks": list(tasks),
        "num_images": len(latencies),
        "num_unlabelled": unlabelled,
        "num_skipped": skipped,
        "latency_ms": latency_summary(latencies),
    }
    params = getattr(predictor, "detection_params", None)
    if "detection" in tasks and params is not None:
        result["detection_params"] = {"score_threshold": params.score_threshold, "nms_iou": params.nms_iou,
                                      "max_detections": params.max_detections}
    result.update(scores.compute())
    return json_safe(result)


def _check_class_names(task: str, dataset_names: list[str], model_names: list[str]) -> None:
    if dataset_names != model_names:
        option = "seg_classes" if task == "segmentation" else "det_classes"
        raise ClassMismatchError(f"{task} classes differ: dataset {dataset_names} vs checkpoint {model_names} "
                                 f"(build the dataset with {option}: {model_names})")


def _warn_on_high_score_threshold(predictor: PredictorLike) -> None:
    params = getattr(predictor, "detection_params", None)
    if "detection" in predictor.tasks and params is not None and params.score_threshold > HIGH_SCORE_THRESHOLD:
        log.warning("detection score threshold %.2f drops low-scoring boxes: AP will be underestimated "
                    "(use about 0.01 for mAP)", params.score_threshold)


def _image_array(image: Any, image_id: Any) -> np.ndarray:
    """[3, H, W] uint8 tensor/array → contiguous [H, W, 3] uint8 array."""
    array = to_numpy(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise EvaluationError(f"sample {image_id!r}: image must be [3, H, W], got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise EvaluationError(f"sample {image_id!r}: image must be uint8, got {array.dtype} "
                              "(build the dataset without transforms)")
    return np.ascontiguousarray(array.transpose(1, 2, 0))
