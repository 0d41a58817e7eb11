"""Training order and augmentation from (seed, epoch, sample index) alone, wherever they run.

A resumed run must draw what an uninterrupted one draws. Loader workers make that hard: a
persistent worker's generator runs on from one epoch to the next and is in no checkpoint, and
each new loader iterator takes a seed from torch's global generator. So neither is used:

- ``EpochSampler`` wraps the training sampler (``RandomSampler``, ``WeightedRandomSampler``,
  ``RepeatAugSampler``): each epoch it gives the sampler a generator seeded with
  (seed, epoch) and yields ``(epoch, index, copy)`` keys instead of bare indices (``copy``: how
  many times the index came before in this epoch; repeated augmentation and draws with
  replacement serve an image several times, each copy augmented anew).
- ``SeededSamples`` wraps the data set: for a key ``(epoch, index, copy)`` it reads the sample
  with torch's generator seeded from (seed, epoch, index, copy), and puts the caller's
  generator back.
  The random transforms (torchvision v2 crops, flips, RandAugment, erasing) draw from it.

The epoch travels inside the key, from the main process to whichever worker reads the
sample, so it is never stale (a worker prefetches the next epoch before any hook could tell
it). A run thus means the same thing with 0, 2 or 8 workers, and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededSamples", "derive_seed"]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: nearby keys give unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler[tuple[int, int, int]]):
    """``sampler``'s indices as ``(epoch, index, copy)`` keys, its randomness seeded by (seed, epoch).

    Lightning calls ``set_epoch`` before each training epoch (also through its DDP sampler
    wrapper); without it, each pass over the sampler counts as the next epoch.
    """

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch
        if callable(getattr(self.sampler, "set_epoch", None)):  # RepeatAugSampler: its seed + epoch
            self.sampler.set_epoch(epoch)
        if hasattr(self.sampler, "generator"):  # RandomSampler, WeightedRandomSampler
            self.sampler.generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        indices = list(self.sampler)  # drawn now, before a later set_epoch could change them
        self.epoch = epoch + 1  # overridden by set_epoch when Lightning drives the loop
        seen: dict[int, int] = {}
        keys = []
        for i in map(int, indices):
            keys.append((epoch, i, seen.get(i, 0)))
            seen[i] = seen.get(i, 0) + 1
        return iter(keys)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededSamples(Dataset):
    """``dataset`` read under torch's global generator seeded with (seed, epoch, index, copy), for
    keys ``(epoch, index, copy)`` from ``EpochSampler``; a plain integer index reads it unseeded.

    Only torch's generator is seeded (what torchvision's transforms draw from); the caller's
    state is restored afterwards, so the training process's own draws (dropout) do not move.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        epoch, index, copy = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, index, copy))
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # `labels`, `class_names`, ... of the wrapped set; never during unpickling in a worker.
        if name in ("dataset", "seed") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
