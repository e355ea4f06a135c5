"""Training and validation data from a :class:`TrainConfig`.

Augmentation is made reproducible per sample: every sample index travels with a seed
drawn from ``(seed, epoch, global batch, slot)``, and the transform runs with the RNGs
seeded from it (then restored). A batch's augmentation therefore does not depend on the
worker that loads it, on prefetching, or on where a resumed run restarted.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from ..data.build import build_dataset
from ..data.dataset_classes import dataset_class_names
from ..data.sampler import InterleavedBatchSampler
from ..data.transforms import build_transforms
from .config import ConfigError, TrainConfig


def merged_class_names(datasets: Sequence[Dataset], names: Sequence[str], tasks: Sequence[str]) -> dict[str, list[str]]:
    """One class list per task, checked to agree across every source labelled for it.

    Raises:
        ConfigError: sources disagree, or no source is labelled for a task.
    """
    merged: dict[str, list[str]] = {}
    origin: dict[str, str] = {}
    for dataset, name in zip(datasets, names):
        for task, classes in dataset_class_names(dataset).items():
            if task not in tasks:
                continue
            if task in merged and merged[task] != classes:
                raise ConfigError(f"{task} classes differ between {origin[task]} {merged[task]} and {name} {classes}; "
                                  "give the sources the same seg_classes/det_classes")
            merged.setdefault(task, classes)
            origin.setdefault(task, name)
    missing = [t for t in tasks if t not in merged]
    if missing:
        raise ConfigError(f"no training source is labelled for {missing[0]}")
    return merged


def _describe(cfg: Mapping[str, Any]) -> str:
    extra = cfg.get("split") or cfg.get("root") or cfg.get("image_dir") or cfg.get("ann_file") or ""
    return f"{cfg.get('type')}({extra})" if extra else str(cfg.get("type"))


@dataclass
class TrainingData:
    """What a run trains and evaluates on."""

    train_dataset: ConcatDataset
    samples_per_source: list[int]
    train_names: list[str]
    val_datasets: list[Dataset]
    val_names: list[str]
    class_names: dict[str, list[str]]


def build_training_data(config: TrainConfig) -> TrainingData:
    """Build the sources of ``config`` for its task.

    Single-task runs keep only the sources labelled for their task, with the same
    ``per_batch``, so a baseline sees exactly the batches of its task that the multitask
    run sees (Martí & Maki 2017 compare at equal training data).
    """
    tasks = config.tasks
    train_transforms = build_transforms(config.augmentation_config(), train=True)
    datasets, names, counts = [], [], []
    for index, source in enumerate(config.data.train):
        try:
            dataset = build_dataset(source.dataset, train_transforms)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            raise ConfigError(f"data.train[{index}] {_describe(source.dataset)}: {exc}") from exc
        labelled = set(dataset_class_names(dataset))
        if not labelled:
            raise ConfigError(f"data.train[{index}] {_describe(source.dataset)}: cannot tell which classes it is "
                              "labelled for (no seg_classes/det_classes)")
        if not labelled & set(tasks):
            continue
        datasets.append(dataset)
        names.append(f"data.train[{index}] {_describe(source.dataset)}")
        counts.append(source.per_batch)
    if not datasets:
        raise ConfigError(f"no training source is labelled for task {config.task!r}")
    class_names = merged_class_names(datasets, names, tasks)
    val_datasets, val_names = [], []
    for index, cfg in enumerate(config.data.val):
        try:
            dataset = build_dataset(cfg, None)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            raise ConfigError(f"data.val[{index}] {_describe(cfg)}: {exc}") from exc
        labelled = dataset_class_names(dataset)
        if not set(labelled) & set(tasks):
            continue
        for task in set(labelled) & set(tasks):
            if labelled[task] != class_names[task]:
                raise ConfigError(f"data.val[{index}] {_describe(cfg)}: {task} classes {labelled[task]} differ from "
                                  f"the training classes {class_names[task]}")
        val_datasets.append(dataset)
        val_names.append(f"data.val[{index}] {_describe(cfg)}")
    return TrainingData(ConcatDataset(datasets), counts, names, val_datasets, val_names, class_names)


def sample_seed(seed: int, epoch: int, global_batch: int, slot: int) -> int:
    """Seed of one sample's augmentation (63-bit, from numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, epoch, global_batch, slot]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Wraps an :class:`InterleavedBatchSampler`: yields ``(index, sample_seed)`` pairs."""

    def __init__(self, batch_sampler: InterleavedBatchSampler):
        self.batch_sampler = batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        sampler = self.batch_sampler
        for batch in sampler:
            step = sampler._batches_done - 1  # the step of the batch just yielded
            global_batch = step * sampler.world_size + sampler.rank
            yield [(index, sample_seed(sampler.seed, sampler.epoch, global_batch, slot))
                   for slot, index in enumerate(batch)]


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Seed torch, numpy and ``random`` inside the block; restore their states after."""
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class SeededDataset(Dataset):
    """``dataset[(index, seed)]`` loads (and augments) sample ``index`` with RNGs seeded by ``seed``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with seeded_rngs(seed):
            return self.dataset[index]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and ``random`` seeded from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def collate_eval(samples: list) -> list:
    """Keep evaluation samples as a list: their images have their original, differing sizes."""
    return list(samples)
