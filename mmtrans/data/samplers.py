"""Repeated augmentation (Hoffer et al. 2020; DeiT): each image several times per batch.

``RepeatAugSampler`` yields each index ``num_repeats`` times in a row, so one batch holds
``num_repeats`` differently augmented copies of each image. Across processes the repeated
stream is dealt out round-robin (DeiT's sampler, as timm's ``RepeatAugSampler``): the copies
of an image land on different ranks, and the shards are disjoint slices of one stream.
With the same ``seed`` (0) it yields exactly what timm's sampler yields; unlike timm's it
needs no dataset object and no process group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["RepeatAugSampler"]


class RepeatAugSampler(Sampler[int]):
    def __init__(
        self,
        dataset_len: int,
        num_repeats: int = 3,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        selected_round: int | None = 256,
    ) -> None:
        """``num_replicas`` / ``rank``: the DDP world size and this process's rank (None: from
        the initialised process group, else 1 and 0).

        ``selected_round``: DeiT keeps an epoch as long as the data set, not ``num_repeats``
        times longer: each rank yields ``floor(dataset_len / selected_round) * selected_round
        / num_replicas`` samples (or ``ceil(dataset_len / num_replicas)`` when ``dataset_len <
        selected_round`` or ``selected_round=0``), from the start of the repeated stream, so an
        epoch sees about ``1 / num_repeats`` of the images. None: the whole stream (every image
        ``num_repeats`` times per epoch).
        """
        if dataset_len < 1:
            raise ValueError(f"dataset_len must be >= 1, got {dataset_len}")
        if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 1:
            raise ValueError(f"num_repeats must be an integer >= 1, got {num_repeats!r}")
        if selected_round is not None and selected_round < 0:
            raise ValueError(f"selected_round must be >= 0 or None, got {selected_round}")
        if num_replicas is None or rank is None:
            dist = torch.distributed
            initialised = dist.is_available() and dist.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
            rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got rank={rank}")
        self.dataset_len, self.num_repeats, self.shuffle, self.seed = dataset_len, num_repeats, shuffle, seed
        self.num_replicas, self.rank, self.selected_round = num_replicas, rank, selected_round
        self.epoch = 0
        # Per rank, the stream padded (by wrapping around) to a multiple of num_replicas.
        self.num_samples = math.ceil(dataset_len * num_repeats / num_replicas)
        if selected_round is None:
            self.num_selected = self.num_samples
        elif selected_round and dataset_len >= selected_round:
            self.num_selected = dataset_len // selected_round * selected_round // num_replicas
        else:
            self.num_selected = math.ceil(dataset_len / num_replicas)
        self.num_selected = min(self.num_selected, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """A new order each epoch, the same on every rank (call it before each epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g)
        else:
            order = torch.arange(self.dataset_len)
        stream = order.repeat_interleave(self.num_repeats).tolist()
        n = len(stream)
        positions = range(self.rank, self.num_samples * self.num_replicas, self.num_replicas)[: self.num_selected]
        return iter([stream[i % n] for i in positions])

    def __len__(self) -> int:
        return self.num_selected
