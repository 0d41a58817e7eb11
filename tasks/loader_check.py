"""Does the data keep up? `LoaderCheck` times the first training steps of a run and says, in
one line, when the model waits for its batches."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback

__all__ = ["LoaderCheck"]


class LoaderCheck(Callback):
    """Over training steps `skip` .. `skip + steps` of the first epoch, measures the time the
    loop waits for the next batch (from one step's end to the next step's start: fetching,
    collating, the copy to the device) against the time of the step itself, and when the wait
    exceeds `max_wait_fraction` of the step time prints ONE warning with the images/s the
    loader delivers and the images/s the model could take, and what to change. Then it is
    idle for the rest of the run.

    `enabled`: true, false, or auto: on when training on a GPU, where waiting leaves an
    expensive device idle and more loader workers or `data.on_device` help; off on the CPU,
    where loading and the model share the same cores (workers would take them from the model).
    The cost is a clock read per hook and, on CUDA, one synchronize per measured step (so
    that the step time is the device's, not the time to queue its kernels).
    """

    def __init__(self, enabled: bool | str = "auto", steps: int = 20, skip: int = 2,
                 max_wait_fraction: float = 0.3) -> None:
        if enabled not in (True, False, "auto"):
            raise ValueError(f"callbacks.loader_check.enabled must be true, false or auto, got {enabled!r}")
        if steps < 1 or skip < 0 or max_wait_fraction <= 0:
            raise ValueError(f"callbacks.loader_check needs steps >= 1, skip >= 0 and max_wait_fraction > 0, "
                             f"got {steps}, {skip}, {max_wait_fraction}")
        self.enabled, self.steps, self.skip, self.max_wait_fraction = enabled, steps, skip, max_wait_fraction
        self.wait_s: list[float] = []
        self.step_s: list[float] = []
        self.images = 0
        self.warning: str | None = None  # the line printed, if any
        self._active = False
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        on_gpu = trainer.strategy.root_device.type == "cuda"
        self._active = self.enabled is True or (self.enabled == "auto" and on_gpu)

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._active:
            return
        now = time.perf_counter()
        if self._last_end is not None and batch_idx > self.skip:  # the first waits include worker start-up
            self.wait_s.append(now - self._last_end)
            self.images += _batch_size(batch)
        self._start = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        self._sync(trainer)
        now = time.perf_counter()
        if len(self.wait_s) > len(self.step_s):
            self.step_s.append(now - self._start)
        self._last_end = now
        if len(self.step_s) >= self.steps:
            self._report(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active:  # a first epoch shorter than the check: judge what was measured
            self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        self._active = False
        if not self.step_s:
            return
        wait, step = sum(self.wait_s[: len(self.step_s)]), sum(self.step_s)
        if wait <= self.max_wait_fraction * step:
            return
        delivered = self.images / (wait + step)
        consumed = self.images / step
        datamodule = trainer.datamodule
        workers = getattr(datamodule, "num_workers", None)
        hints = [f"raise data.num_workers (now {workers})" if workers is not None else "raise data.num_workers"]
        if getattr(datamodule, "on_device_possible", False) and not datamodule.on_device:
            hints.append("set data.on_device=true (augment on the GPU)")
        hints.append("or lighten data.augment")
        self.warning = (
            f"loader_check: the data loader is the bottleneck: it delivers {delivered:.0f} images/s, the model "
            f"takes {consumed:.0f} images/s (waited {1000 * wait / len(self.step_s):.1f} ms per step of "
            f"{1000 * step / len(self.step_s):.1f} ms, first {len(self.step_s)} steps); {', '.join(hints)}"
        )
        if trainer.is_global_zero:
            print(self.warning, flush=True)


def _batch_size(batch: Any) -> int:
    images = batch.get("image") if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(images.shape[0]) if isinstance(images, torch.Tensor) else len(images)
