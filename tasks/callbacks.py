"""Lightning callbacks of our own (the stock ones are configured in conf/callbacks/)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

__all__ = ["RNGStateCallback", "get_rng_states", "set_rng_states"]


class RNGStateCallback(Callback):
    """Keeps the global random generators in checkpoints, so that a resumed run goes on
    exactly as one that never stopped.

    Lightning restores weights, optimizer, scheduler and loop counters, but not the states
    of torch's (CPU and CUDA), numpy's and python's global generators. Without them a run
    resumed from `last.ckpt` shuffles the next epoch differently (RandomSampler draws its
    seed from torch's generator), crops and flips other images and drops other units.

    Saving: in `state_dict()`, which Lightning calls as it writes each checkpoint. Restoring:
    in `load_state_dict()`, when `fit(ckpt_path=...)` loads the checkpoint, before the
    training loop starts. Not later, at `on_train_epoch_start`: on resume Lightning creates
    the train loader's iterator (one draw from torch's generator) before that hook, while an
    uninterrupted run creates the next epoch's iterator after it, so every draw would be off
    by one. In between, Lightning's sanity check runs inside `isolate_rng()` (as of
    pytorch-lightning 2.6) and leaves the states as they were.

    Exact for checkpoints written at the end of an epoch (our `last.ckpt`) with
    `data.num_workers=0` (the default): persistent loader workers keep their own generators
    running from one epoch to the next, and those are not in the checkpoint.
    States are stored as tensors and plain tuples of ints, which `weights_only` loading reads.
    """

    def state_dict(self) -> dict[str, Any]:
        return get_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict)


def get_rng_states() -> dict[str, Any]:
    """torch (CPU, and CUDA when there is one), numpy and python generator states, in types
    that `torch.load(weights_only=True)` reads back (no numpy arrays)."""
    version, keys, pos, has_gauss, cached_gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (str(version), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached_gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what `get_rng_states` returned (CUDA states only where there are GPUs)."""
    torch.set_rng_state(states["torch"].cpu())
    version, keys, pos, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((version, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached_gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), device)
