"""Training order and augmentation depend only on (seed, epoch, index): not on the loader's
workers, their persistence, or torch's global generator."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from mmtrans.data.epoch_seeds import EpochSampler, SeededSamples
from mmtrans.data.samplers import RepeatAugSampler


class RandomDraws(Dataset):
    """Each read draws from torch's global generator, as torchvision's random transforms do."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "draw": torch.rand(1)}


def epochs(num_workers: int, persistent: bool, first_epoch: int = 0, n: int = 2) -> list[list[tuple[int, float]]]:
    sampler = EpochSampler(RandomSampler(range(12)), seed=7)
    loader = DataLoader(SeededSamples(RandomDraws(), seed=7), batch_size=4, sampler=sampler,
                        num_workers=num_workers, persistent_workers=persistent,
                        generator=torch.Generator().manual_seed(0))
    out = []
    for epoch in range(first_epoch, first_epoch + n):
        sampler.set_epoch(epoch)
        out.append([(int(i), float(d)) for b in loader for i, d in zip(b["index"], b["draw"][:, 0])])
    return out


def test_same_samples_and_draws_with_or_without_persistent_workers_and_from_any_epoch() -> None:
    torch.manual_seed(0)
    plain = epochs(0, False, n=3)
    assert plain[0] != plain[1]  # a new order and new draws each epoch
    assert sorted(i for i, _ in plain[0]) == list(range(12))
    torch.manual_seed(123)  # the global generator plays no part
    assert epochs(2, True, n=3) == plain
    assert epochs(2, True, first_epoch=1) == plain[1:]  # a resumed run, started at epoch 1


def test_the_callers_generator_is_left_where_it_was() -> None:
    data = SeededSamples(RandomDraws(), seed=1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a, b = data[(0, 3, 0)]["draw"], data[(0, 3, 0)]["draw"]
    assert torch.equal(a, b) and not torch.equal(a, data[(1, 3, 0)]["draw"])
    assert not torch.equal(a, data[(0, 3, 1)]["draw"])  # a second copy of it, augmented anew
    assert torch.equal(torch.rand(3), expected)
    assert len(data) == 12 and data[4]["index"] == 4  # a plain index reads unseeded


def test_weighted_and_repeated_samplers_are_seeded_per_epoch() -> None:
    for make in (lambda: WeightedRandomSampler(torch.ones(12, dtype=torch.double), 12),
                 lambda: RepeatAugSampler(12, 3, seed=2, num_replicas=1, rank=0, selected_round=0)):
        a, b = EpochSampler(make(), seed=3), EpochSampler(make(), seed=3)
        b.set_epoch(1)
        first, second = list(a), list(a)  # without set_epoch each pass is the next epoch
        assert second == list(b) and first != second
        assert {k[0] for k in first} == {0} and {k[0] for k in second} == {1}
    repeated = list(EpochSampler(RepeatAugSampler(4, 3, num_replicas=1, rank=0, selected_round=None), seed=0))
    assert [c for _, _, c in repeated] == [0, 1, 2] * 4
