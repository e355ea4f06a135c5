"""Interleaved batches: ratio in every batch, determinism, ranks, resume; mixed-task collate."""

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision import tv_tensors

from mtl_perception.data.base import detection_fields, mask_field
from mtl_perception.data.collate import collate_batch
from mtl_perception.data.sampler import InterleavedBatchSampler, split_batch_size

DET, SEG, BOTH = 10, 7, 4  # source sizes


class TinySource(Dataset):
    """Samples labelled for 'det', 'seg' or 'both'; the image's first pixel holds the index."""

    def __init__(self, kind, size):
        self.kind, self.size = kind, size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        image = torch.zeros(3, 8, 8, dtype=torch.uint8)
        image[0, 0, 0] = index
        target = {"image_id": f"{self.kind}/{index}"}
        if self.kind in ("det", "both"):
            target.update(detection_fields(np.array([[1, 1, 5, 6]] * (index % 3)), [2] * (index % 3), (8, 8)))
        if self.kind in ("seg", "both"):
            target["mask"] = mask_field(np.full((8, 8), index % 2, dtype=np.uint8))
        return tv_tensors.Image(image), target


def source_of(index):
    return "det" if index < DET else "seg" if index < DET + SEG else "both"


def test_every_batch_has_the_configured_mix():
    sampler = InterleavedBatchSampler([DET, SEG, BOTH], [3, 2, 1], seed=5)
    assert len(sampler) == 4  # ceil(10 / 3) steps: det is seen once
    batches = list(sampler)
    assert len(batches) == 4
    for batch in batches:
        assert [source_of(i) for i in batch] == ["det"] * 3 + ["seg"] * 2 + ["both"]
    det_seen = [i for b in batches for i in b[:3]]
    assert set(det_seen) == set(range(DET))  # the longest source is covered in one epoch
    seg_seen = [i for b in batches for i in b[3:5]]
    assert set(seg_seen) == set(range(DET, DET + SEG))  # the shorter one cycled (8 draws of 7)


def test_shorter_source_is_reshuffled_when_it_cycles():
    sampler = InterleavedBatchSampler([30, 4], [1, 1], seed=0)
    seg = [b[1] - 30 for b in sampler]
    passes = [tuple(seg[i : i + 4]) for i in range(0, 28, 4)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)
    assert len(set(passes)) > 1


def test_split_batch_size_follows_ratios():
    assert split_batch_size(8, [1, 1]) == [4, 4]
    assert split_batch_size(10, [3, 1]) == [8, 2]
    assert split_batch_size(5, [100, 1]) == [4, 1]
    assert sum(split_batch_size(7, [0.2, 0.3, 0.5])) == 7
    with pytest.raises(ValueError):
        split_batch_size(1, [1, 1])


def test_same_seed_and_epoch_give_same_batches_and_epochs_differ():
    first = InterleavedBatchSampler([DET, SEG], [2, 2], seed=3)
    second = InterleavedBatchSampler([DET, SEG], [2, 2], seed=3)
    assert list(first) == list(second)
    assert list(first) == list(first)  # iterating again replays the epoch
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0
    other_seed = InterleavedBatchSampler([DET, SEG], [2, 2], seed=4)
    assert list(other_seed) != epoch0


def test_ranks_get_disjoint_shares_and_each_rank_interleaves():
    world = 3
    samplers = [InterleavedBatchSampler([12, 5], [2, 1], seed=1, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in samplers} == {2}  # ceil(12 / (3 * 2))
    det_by_rank = []
    for sampler in samplers:
        batches = list(sampler)
        for batch in batches:
            assert [i < 12 for i in batch] == [True, True, False]
        det_by_rank.append([i for b in batches for i in b[:2]])
    everything = sum(det_by_rank, [])
    assert sorted(everything) == list(range(12))  # disjoint and covering
    seg = [i for s in samplers for b in s for i in b[2:]]
    assert len(seg) == 6 and len(set(seg)) == 5  # 5 seg samples, one pass plus one draw of the next


def test_drop_last_shortens_the_epoch():
    assert len(InterleavedBatchSampler([10, 3], [3, 1], drop_last=False)) == 4
    assert len(InterleavedBatchSampler([10, 3], [3, 1], drop_last=True)) == 3
    with pytest.raises(ValueError, match="no complete batch"):
        InterleavedBatchSampler([2], [4], drop_last=True)


def test_resume_mid_epoch_continues_with_exactly_the_remaining_batches():
    reference = InterleavedBatchSampler([DET, SEG, BOTH], [2, 1, 1], seed=9, rank=1, world_size=2)
    reference.set_epoch(4)
    full = list(reference)
    assert len(full) == 4  # seg needs ceil(7 / (2 ranks * 1)) steps

    running = InterleavedBatchSampler([DET, SEG, BOTH], [2, 1, 1], seed=9, rank=1, world_size=2)
    running.set_epoch(4)
    iterator = iter(running)
    done = [next(iterator), next(iterator)]
    state = running.state_dict()
    assert state["epoch"] == 4 and state["batches_done"] == 2

    resumed = InterleavedBatchSampler([DET, SEG, BOTH], [2, 1, 1], seed=9, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # the trainer's usual call keeps the loaded position
    rest = list(resumed)
    assert done + rest == full
    resumed.set_epoch(5)
    expected = InterleavedBatchSampler([DET, SEG, BOTH], [2, 1, 1], seed=9, rank=1, world_size=2)
    expected.set_epoch(5)
    assert list(resumed) == list(expected)


def test_state_dict_with_batches_done_for_prefetching_loaders():
    sampler = InterleavedBatchSampler([DET, SEG], [1, 1], seed=0)
    full = list(sampler)
    state = sampler.state_dict(batches_done=3)
    resumed = InterleavedBatchSampler([DET, SEG], [1, 1], seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == full[3:]


def test_load_state_dict_rejects_a_different_setup():
    state = InterleavedBatchSampler([DET, SEG], [2, 2], seed=0).state_dict()
    with pytest.raises(ValueError, match="source_sizes"):
        InterleavedBatchSampler([DET, SEG + 1], [2, 2], seed=0).load_state_dict(state)


def test_from_concat_and_dataloader_give_mixed_batches():
    dataset = ConcatDataset([TinySource("det", DET), TinySource("seg", SEG), TinySource("both", BOTH)])
    sampler = InterleavedBatchSampler.from_concat(dataset, [2, 1, 1], seed=2)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)
    batches = list(loader)
    assert len(batches) == len(sampler) == 7  # seg (7 samples, 1 per batch) is seen once
    for images, targets in batches:
        assert images.dtype == torch.uint8 and tuple(images.shape) == (4, 3, 8, 8)
        kinds = [t["image_id"].split("/")[0] for t in targets]
        assert kinds == ["det", "det", "seg", "both"]


def test_collate_keeps_keys_only_where_labelled():
    samples = [TinySource("det", 5)[2], TinySource("seg", 5)[3], TinySource("both", 5)[4]]
    images, targets = collate_batch(samples)
    assert tuple(images.shape) == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert images[:, 0, 0, 0].tolist() == [2, 3, 4]
    assert set(targets[0]) == {"image_id", "boxes", "labels"}
    assert set(targets[1]) == {"image_id", "mask"}
    assert set(targets[2]) == {"image_id", "boxes", "labels", "mask"}
    assert targets[0]["boxes"].shape == (2, 4) and targets[0]["labels"].tolist() == [2, 2]
    assert targets[2]["boxes"].shape == (1, 4)
    assert targets[1]["mask"].dtype == torch.int64 and int(targets[1]["mask"].sum()) == 64
    assert type(targets[2]["mask"]) is torch.Tensor and type(targets[0]["boxes"]) is torch.Tensor


def test_collate_rejects_images_of_different_sizes():
    small = TinySource("det", 3)[1]
    big = (tv_tensors.Image(torch.zeros(3, 9, 8, dtype=torch.uint8)), {"image_id": "big"})
    with pytest.raises(ValueError, match="big: \\(3, 9, 8\\)"):
        collate_batch([small, big])


def test_single_source_is_a_shuffled_batch_sampler():
    sampler = InterleavedBatchSampler([10], [4], seed=0)
    batches = list(sampler)
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    assert set(sum(batches, [])) == set(range(10))  # the last batch is completed from the next pass
    assert sum(batches, [])[:10] != list(range(10))
