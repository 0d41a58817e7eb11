"""Real kills for tests/test_sigkill_resume.py, imported by the `python train.py` subprocesses it
starts (as `tests.fault_injection`: train.py's folder, the repository root, is on their path).

Kept apart from the test file so that the subprocesses import only this, not pytest and the
other tests.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch

from tasks.checkpoint_io import AtomicCheckpointIO


class KillMidEpoch(L.Callback):
    """SIGKILLs its own process after batch `batch` of epoch `epoch` (both counted from 0):
    no exception, no `finally`, no Lightning teardown; what is on disk is what a kill leaves."""

    def __init__(self, epoch: int = 1, batch: int = 2) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def die_while_saving(path: str, after_bytes: int = 4096) -> None:
    """Save {"epoch": 1} to `path` with AtomicCheckpointIO, then save {"epoch": 2} over it and
    SIGKILL the process from inside torch.save once `after_bytes` bytes of it are written."""
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.zeros(1000)}, path)
    real_save = torch.save

    class KillAfter:
        """The open file, passed to torch.save, that dies part way through the writes."""

        def __init__(self, f: Any) -> None:
            self.f, self.written = f, 0

        def write(self, data: bytes) -> int:
            if self.written + len(data) > after_bytes:
                self.f.write(bytes(data)[: after_bytes - self.written])
                self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            self.written += len(data)
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

    torch.save = lambda obj, f: real_save(obj, KillAfter(f))
    io.save_checkpoint({"epoch": 2, "w": torch.ones(100_000)}, path)
    raise AssertionError(f"still alive: the save of {Path(path).name} was not interrupted")
