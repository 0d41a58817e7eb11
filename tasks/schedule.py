"""The step-wise learning-rate schedule every task uses: linear warm-up, then cosine."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
import torch

from mmtrans.optim import warmup_cosine

__all__ = ["warmup_cosine_config"]


def warmup_cosine_config(
    trainer: L.Trainer, optimizer: torch.optim.Optimizer, warmup_epochs: float, min_lr_ratio: float
) -> dict[str, Any]:
    """``configure_optimizers``' return value: ``optimizer`` with a per-step warm-up over
    ``warmup_epochs`` and a cosine decay to ``min_lr_ratio`` over the whole run."""
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = int(total * warmup_epochs / max(1, trainer.max_epochs or 1))
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
