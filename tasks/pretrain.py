"""Self-supervised pretraining as a LightningModule: a masked autoencoder on any image data.

Labels and captions in the batches are ignored; only ``batch["image"]`` is read. Logs
``train/loss``, ``val/loss`` and ``test/loss`` (MSE on hidden patches: lower is better, so
the task config sets ``optimized_metric_mode: min``) and after each validation epoch writes
``samples/epoch_<NNN>.png`` (original / masked / reconstruction of a few val images, the same
images and masks every epoch). The config in ``hparams`` rebuilds the model
(``tasks.checkpoint.load_model``); downstream tasks take its encoder with
``model.pretrained=<run>/checkpoints/last.ckpt`` (``model.encoder_pretrained=`` for captioning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from mmtrans.data.bad_images import is_empty_batch
from mmtrans.data.preprocessing import unnormalize
from mmtrans.optim import build_adamw
from mmtrans.viz import image_rows
from tasks.checkpoint import checkpoint_config
from tasks.schedule import warmup_cosine_config

__all__ = ["PretrainTask"]


class PretrainTask(L.LightningModule):
    # The model factories this task builds a model with (checked first: tasks/task_fit.py).
    MODEL_TARGETS = ("mmtrans.models.create_mae",)
    DATA_YIELDS = None  # any images: labels and captions are ignored

    def __init__(
        self,
        model: nn.Module,
        config: dict | None = None,
        preprocessing: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        num_samples: int = 8,
    ) -> None:
        """``model``: a ``MaskedAutoencoder`` (``forward(images) -> (loss, pred, mask)``,
        ``reconstruct``). ``num_samples``: val images in each ``samples/epoch_<NNN>.png`` (0: none)."""
        super().__init__()
        if num_samples < 0:
            raise ValueError(f"task.num_samples must be >= 0, got {num_samples}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self._sample_images: Tensor | None = None

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["image"]
        loss = self(images)[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> Tensor | None:
        if is_empty_batch(batch):
            return None
        images = batch["image"]
        loss = self(images)[0]
        self.log(f"{prefix}loss", loss, on_epoch=True, sync_dist=True, batch_size=len(images), prog_bar=True)
        if prefix == "val/" and self._sample_images is None and self.hparams.num_samples:
            self._sample_images = images[: self.hparams.num_samples].detach().cpu()
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, "val/")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, "test/")

    def on_validation_epoch_end(self) -> None:
        if self._sample_images is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        out = Path(self.trainer.default_root_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        self.render_samples(self._sample_images).save(out / f"epoch_{self.current_epoch:03d}.png")

    def render_samples(self, images: Tensor) -> Any:
        """A PIL picture: the images, their visible patches, and the reconstruction (hidden
        patches predicted, visible ones pasted in). Fixed masks (seed 0) so epochs compare."""
        grid = self.model.encoder.patch_embed.dynamic_grid(tuple(images.shape[-2:]))
        noise = torch.rand(len(images), grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
        was_training = self.model.training
        self.model.eval()
        recon, mask = self.model.reconstruct(images.to(self.device), noise.to(self.device))
        self.model.train(was_training)
        original, recon, mask = self._unnormalize(images), self._unnormalize(recon.cpu()), mask.cpu()
        masked = original * (1 - mask) + 0.5 * mask  # hidden patches grey
        return image_rows({"original": original, "masked": masked, "reconstruction": recon})

    def _unnormalize(self, images: Tensor) -> Tensor:
        """Back to [0, 1] pixels with the preprocessing the task was built with."""
        return unnormalize(images, self.hparams.get("preprocessing"))

    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> PretrainTask:
        """Data, then the model (built for the data's resolved preprocessing), then the task."""
        datamodule.setup("fit")
        pp = datamodule.preprocessing
        model = instantiate(cfg.model, img_size=pp.img_size, in_chans=pp.in_chans, _convert_="all")
        # A partial: `config` would clash with instantiate's own first argument.
        return instantiate(cfg.task, _partial_=True, _convert_="all")(
            model=model, config=checkpoint_config(cfg, pp, model), preprocessing=pp.as_dict()
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = build_adamw(self.model, hp.lr, hp.weight_decay, hp.betas)
        return warmup_cosine_config(self.trainer, opt, hp.warmup_epochs, hp.min_lr_ratio)
