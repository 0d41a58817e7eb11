"""An exponential moving average of the weights (timm's ``ModelEmaV3``) as a Lightning callback.

    python train.py callbacks=ema callbacks.ema.decay=0.999

What it does, and why each part is where it is:
- update: after every optimizer step (``on_train_batch_end`` when ``global_step`` moved, so
  gradient accumulation updates once per step), with ``step=global_step`` as timm's training
  script passes it: the first update copies the weights, then decay (or its warm-up) applies.
- evaluate: validation and test run on the EMA weights, copied into the task's model in
  place before and the training weights copied back after (parameters keep their identity,
  so the optimizer and compiled graphs are untouched). ModelCheckpoint's metric is the EMA's.
- save: the checkpoint's ``state_dict`` holds the EMA weights for ``model.*``, so
  ``load_model``, ``mmtrans-export``, ``train=false ckpt_path=...`` and the test on the best
  checkpoint all see the EMA model; the training weights ride in this callback's state.
- resume: ``resume_from`` puts the training weights back into the model and the EMA into the
  average, so a resumed run ends exactly as an uninterrupted one.
Checkpoints saved with ``save_weights_only`` skip callback hooks and hold the training weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn

__all__ = ["WeightEMA"]

_PREFIX = "model."  # the tasks keep their network as `self.model`


class WeightEMA(Callback):
    def __init__(
        self,
        decay: float = 0.9998,
        min_decay: float = 0.0,
        update_after_step: int = 0,
        use_warmup: bool = False,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
    ) -> None:
        """Arguments of ``timm.utils.ModelEmaV3``. ``use_warmup``: the decay ramps up as
        ``1 - (1 + step / warmup_gamma) ** -warmup_power``, capped at ``decay`` (short runs)."""
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"callbacks.ema.decay must be in [0, 1], got {decay}")
        if not 0.0 <= min_decay <= decay:
            raise ValueError(f"callbacks.ema.min_decay must be in [0, decay={decay}], got {min_decay}")
        self.kwargs = dict(decay=decay, min_decay=min_decay, update_after_step=update_after_step,
                           use_warmup=use_warmup, warmup_gamma=warmup_gamma, warmup_power=warmup_power)
        self.ema: Any = None  # timm ModelEmaV3, built at fit start (the model is on its device by then)
        self._last_step = -1
        self._backup: dict[str, Tensor] | None = None  # training weights while the EMA is swapped in
        self._pending_ema: dict[str, Tensor] | None = None  # from a checkpoint, until the EMA exists
        self._eval_ckpt_loaded = False  # a non-fit stage loaded a checkpoint: it holds EMA weights
        self._task: L.LightningModule | None = None

    @staticmethod
    def _model(pl_module: L.LightningModule) -> nn.Module:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, nn.Module):
            raise ValueError(f"callbacks.ema needs a task with a `model` network; {type(pl_module).__name__} has none")
        return model

    # -- training ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(self._model(pl_module), **self.kwargs)
        self._load_pending()

    def _load_pending(self) -> None:
        if self.ema is not None and self._pending_ema is not None:  # resumed: continue the saved average
            self.ema.module.load_state_dict(self._pending_ema)
            self._pending_ema = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # restored by now when resuming (not yet at fit start)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.ema is not None and trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.ema.update(self._model(pl_module), step=trainer.global_step)

    # -- evaluation on the EMA weights ------------------------------------------------------
    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.ema is None or self._backup is not None or self._eval_ckpt_loaded:
            return
        model = self._model(pl_module)
        self._backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.ema.module.state_dict())

    def _swap_out(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._backup is not None:
            self._model(pl_module).load_state_dict(self._backup)
            self._backup = None
        if trainer.state.fn != TrainerFn.FITTING:
            self._eval_ckpt_loaded = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(trainer, pl_module)

    # -- checkpoints ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._task = pl_module  # state_dict() gets no module; the training weights are read here

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {}
        # Mid-validation the model holds the EMA: the training weights are the backup.
        training = self._backup if self._backup is not None else self._model(self._task).state_dict()
        return {"training_weights": training}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # done in on_load_checkpoint, which also sees the model

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's model weights become the EMA's (the training ones are in our state)."""
        if self.ema is None:
            return
        state = checkpoint["state_dict"]
        for k, v in self.ema.module.state_dict().items():
            if _PREFIX + k in state:
                state[_PREFIX + k] = v

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Lightning has loaded ``state_dict`` (the EMA) into the model. Resuming a fit: keep it
        for the average, put the training weights back. Evaluating: the model is the EMA."""
        if trainer.state.fn != TrainerFn.FITTING:
            self._eval_ckpt_loaded = True
            return
        training = ((checkpoint.get("callbacks") or {}).get(self.state_key) or {}).get("training_weights")
        if training is None:  # a checkpoint written without EMA: the average starts from its weights
            return
        model = self._model(pl_module)
        self._pending_ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(training)
        self._load_pending()  # strategies that restore after setup: the EMA exists already
