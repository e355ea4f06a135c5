"""Mini-batches that interleave several sources (Martí & Maki 2017, aerial setting: every
mini-batch mixes detection-only and segmentation-only images)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import ConcatDataset, Sampler


def split_batch_size(batch_size: int, ratios: Sequence[float]) -> list[int]:
    """Share ``batch_size`` among sources in proportion to ``ratios`` (largest remainder),
    giving every source at least one slot."""
    if batch_size < len(ratios) or not ratios or any(r <= 0 for r in ratios):
        raise ValueError(f"need positive ratios and batch_size >= number of sources, got {batch_size}, {list(ratios)}")
    total = float(sum(ratios))
    exact = [batch_size * r / total for r in ratios]
    counts = [max(1, int(math.floor(e))) for e in exact]
    while sum(counts) < batch_size:
        counts[max(range(len(counts)), key=lambda i: exact[i] - counts[i])] += 1
    while sum(counts) > batch_size:
        counts[max((i for i in range(len(counts)) if counts[i] > 1), key=lambda i: counts[i] - exact[i])] -= 1
    return counts


class InterleavedBatchSampler(Sampler[list[int]]):
    """Batch sampler over a ``ConcatDataset`` of sources; every batch holds a fixed number of
    samples of each source.

    Epoch: ``len(self)`` steps, where a step is one batch on every rank. The step count is
    ``max_i ceil(n_i / (world_size * k_i))`` (``floor`` with ``drop_last``) for source ``i`` of
    size ``n_i`` contributing ``k_i`` samples per batch: the source needing the most steps is
    seen once (all ranks together), the others cycle. Each source's sample order is a
    concatenation of permutations drawn from ``(seed, epoch, source, cycle)``, so a cycling
    source is reshuffled at every pass and the whole epoch is determined by (seed, epoch).
    Without ``drop_last`` the last batch of the longest source is completed from its next
    permutation, so every batch is full and a few samples repeat.

    Distributed: global batch ``g = step * world_size + rank`` goes to ``rank``; batches of
    different ranks take different stretches of each source's order, so within a pass over a
    source the ranks' samples are disjoint, and each rank's batches hold every source.

    Batch layout: the ``k_0`` samples of source 0 first, then source 1, etc.

    Resuming: :meth:`state_dict` records ``(epoch, batches_done)``; after
    :meth:`load_state_dict`, the next iteration continues with exactly the remaining batches.
    ``set_epoch(e)`` with a different epoch starts that epoch from its beginning; with the same
    epoch it keeps a loaded position. An iteration run to the end leaves the position at
    ``len(self)``; the next ``__iter__`` of the same epoch replays it from the start.
    With DataLoader workers the sampler runs ahead of training (prefetching), so pass the
    number of batches actually trained on: ``state_dict(batches_done=k)``.

    Args:
        source_sizes: number of samples of each source, in ``ConcatDataset`` order.
        samples_per_source: how many samples of each source go into each batch.
        seed: base seed, shared by all ranks.
        rank, world_size: this process's place in distributed training.
        drop_last: end the epoch before the longest source's incomplete last batch.
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        samples_per_source: Sequence[int],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if len(source_sizes) != len(samples_per_source) or not source_sizes:
            raise ValueError(f"need one count per source, got sizes {list(source_sizes)} and counts {list(samples_per_source)}")
        if any(n < 1 for n in source_sizes):
            raise ValueError(f"every source needs at least one sample, got sizes {list(source_sizes)}")
        if any(k < 1 for k in samples_per_source):
            raise ValueError(f"every source needs at least one slot per batch, got {list(samples_per_source)}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world_size {world_size}")
        self.source_sizes = [int(n) for n in source_sizes]
        self.samples_per_source = [int(k) for k in samples_per_source]
        self.offsets = np.concatenate([[0], np.cumsum(self.source_sizes)[:-1]]).astype(np.int64)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = drop_last
        rounding = math.floor if drop_last else math.ceil
        self._steps = max(rounding(n / (world_size * k)) for n, k in zip(self.source_sizes, self.samples_per_source))
        if self._steps < 1:
            raise ValueError("drop_last leaves no complete batch: every source is smaller than one global batch share")
        self.epoch = 0
        self._next_start = 0
        self._batches_done = 0

    @classmethod
    def from_concat(cls, dataset: ConcatDataset, samples_per_source: Sequence[int], **kwargs) -> "InterleavedBatchSampler":
        """Sampler for the sources of ``dataset`` (a ``ConcatDataset``)."""
        return cls([len(d) for d in dataset.datasets], samples_per_source, **kwargs)

    @property
    def batch_size(self) -> int:
        """Samples per batch on this rank."""
        return sum(self.samples_per_source)

    def __len__(self) -> int:
        return self._steps

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate (resets the position unless it is the current epoch)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._next_start = 0
            self._batches_done = 0

    def _source_order(self, source: int) -> np.ndarray:
        """Global sample order of ``source`` for this epoch (local indices)."""
        size = self.source_sizes[source]
        needed = self._steps * self.world_size * self.samples_per_source[source]
        passes = [
            np.random.default_rng([self.seed, self.epoch, source, cycle]).permutation(size)
            for cycle in range(math.ceil(needed / size))
        ]
        return np.concatenate(passes)[:needed]

    def __iter__(self) -> Iterator[list[int]]:
        start = self._next_start
        self._next_start = 0
        orders = [self._source_order(i) + self.offsets[i] for i in range(len(self.source_sizes))]
        self._batches_done = start
        for step in range(start, self._steps):
            slot = step * self.world_size + self.rank
            batch: list[int] = []
            for order, count in zip(orders, self.samples_per_source):
                batch.extend(order[slot * count : (slot + 1) * count].tolist())
            self._batches_done = step + 1
            yield batch

    def _fingerprint(self) -> dict:
        return {
            "source_sizes": list(self.source_sizes),
            "samples_per_source": list(self.samples_per_source),
            "seed": self.seed,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
        }

    def state_dict(self, batches_done: int | None = None) -> dict:
        """Position to resume from: epoch and batches of it done (default: batches yielded so far)."""
        done = self._batches_done if batches_done is None else int(batches_done)
        if not 0 <= done <= self._steps:
            raise ValueError(f"batches_done must be in 0..{self._steps}, got {done}")
        return {"epoch": self.epoch, "batches_done": done, **self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`; the sources and settings must be the same."""
        expected = self._fingerprint()
        differing = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if differing:
            raise ValueError(f"sampler state does not match this sampler (saved, current): {differing}")
        done = int(state["batches_done"])
        if not 0 <= done <= self._steps:
            raise ValueError(f"batches_done {done} is outside 0..{self._steps}")
        self.epoch = int(state["epoch"])
        self._next_start = done
        self._batches_done = done
