"""Lightning callbacks of our own (the stock ones are configured in conf/callbacks/)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback

from mmtrans.data.bad_images import SKIPPED_KEY, BadSample, format_bad_images

__all__ = [
    "BadImageReport",
    "NanGuard",
    "NonFiniteError",
    "RNGStateCallback",
    "get_rng_states",
    "set_rng_states",
]


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
    no loader workers (`data.num_workers=auto` gives none on the CPU): persistent workers keep their own generators
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


class NonFiniteError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient (raised by NanGuard)."""


class NanGuard(Callback):
    """Stop at the first NaN or Inf loss or gradient, saying where, before it reaches the weights.

    The loss is checked before backward and the gradients before the optimizer step, so the
    weights are still those of the last good step: they are saved to `checkpoint_path`
    (``nan_guard_last_good.ckpt`` in the run folder by default), and the error names the
    global step, the epoch, the batch's sample ids (the datasets' `id` field) and the file.
    Gradient clipping (`trainer.gradient_clip_val`) and Lightning's fp16 loss scaler act
    before this check; under fp16 the scaler skips overflowing steps itself, so gradients are
    only checked when no scaler is in use.
    """

    def __init__(self, checkpoint_path: str | None = None, check_grads: bool = True) -> None:
        self.checkpoint_path = checkpoint_path
        self.check_grads = check_grads
        self._batch_ids: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        ids = batch.get("id") if isinstance(batch, dict) else None
        self._batch_ids = [str(i) for i in ids] if ids is not None else [f"batch {batch_idx}"]

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._stop(trainer, f"loss is {loss.detach().float().item()}")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self.check_grads or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        bad = [n for n, p in pl_module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            self._stop(trainer, f"non-finite gradients in {', '.join(bad[:3])}{more}")

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        path = Path(self.checkpoint_path or Path(trainer.default_root_dir) / "nan_guard_last_good.ckpt")
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)  # the weights before this step: the last good state
        shown = ", ".join(self._batch_ids[:8]) + (f" (+{len(self._batch_ids) - 8} more)" if len(self._batch_ids) > 8 else "")
        raise NonFiniteError(
            f"{what} at global step {trainer.global_step} (epoch {trainer.current_epoch}); batch samples: {shown}. "
            f"Last good state saved to {path}. Lower task.lr, set trainer.gradient_clip_val, or check these samples."
        )


class BadImageReport(Callback):
    """With `data.on_bad_image=skip`: counts the samples left out because their image did not
    decode, and at the end of each train / val / test epoch prints their files and logs
    `<split>/skipped_images` (so the count is in metrics.json; summed over processes).

    The samples arrive with each batch (`batch["skipped_images"]`, filled by
    `mmtrans.data.bad_images.SkippingCollate`), so workers need no shared state. `skipped`
    keeps every entry of this process with its split and epoch; train.py writes them to
    `bad_images.json`. train.py adds this callback whenever the policy is "skip".
    """

    def __init__(self) -> None:
        self.skipped: list[dict[str, Any]] = []
        self._epoch: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}

    def _take(self, split: str, batch: Any) -> None:
        if isinstance(batch, dict):
            self._epoch[split] += batch.get(SKIPPED_KEY, ())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._take("train", batch)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._take("val", batch)

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._take("test", batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:  # a few batches before training: counted by the real epochs
            self._epoch["val"] = []
            return
        self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        entries, self._epoch[split] = self._epoch[split], []
        pl_module.log(f"{split}/skipped_images", float(len(entries)), reduce_fx="sum", sync_dist=True)
        if not entries:
            return
        epoch = trainer.current_epoch if split != "test" else None  # testing has no epoch of its own
        self.skipped += [{**e, "split": split, "rank": trainer.global_rank, "epoch": epoch} for e in entries]
        where = "in testing" if epoch is None else f"in epoch {epoch}"
        rank = f" (process {trainer.global_rank})" if trainer.world_size > 1 else ""
        bad = [BadSample(e["path"], e["reason"]) for e in entries]
        print(f"data.on_bad_image=skip: {len(entries)} {split} sample(s) left out {where}{rank}:\n"
              f"{format_bad_images(bad)}", flush=True)
