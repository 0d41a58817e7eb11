"""Image classification as a LightningModule: training, evaluation, optimiser and schedule.

The model is any ``nn.Module`` mapping images to logits (``ImageClassifier`` by default).
Everything needed to rebuild it (resolved config, class names) is in ``hparams`` and so in
every checkpoint; ``tasks.checkpoint.load_model`` rebuilds a model from a checkpoint alone.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MultilabelAccuracy

from mmtrans.optim import build_adamw
from tasks.schedule import warmup_cosine_config

__all__ = ["ClassificationTask"]

LABEL_TYPES = ("multiclass", "multilabel")


class ClassificationTask(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: list[str] | None = None,
        config: dict | None = None,
        label_type: str = "multiclass",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        layer_decay: float | None = None,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.1,
        mixup: dict | None = None,
        freeze_encoder: bool = False,
    ) -> None:
        """``mixup``: keyword arguments of timm's ``Mixup`` (``mixup_alpha``, ``cutmix_alpha``,
        ``prob``, ...), or None. ``freeze_encoder``: train the head only (linear probe)."""
        super().__init__()
        if label_type not in LABEL_TYPES:
            raise ValueError(f"task.label_type must be one of {LABEL_TYPES}, got {label_type!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        if freeze_encoder:
            model.encoder.requires_grad_(False)
        self.mixup = None
        if mixup:
            from timm.data import Mixup

            self.mixup = Mixup(**{"label_smoothing": label_smoothing, **mixup, "num_classes": num_classes})
        self.val_metrics = self._metrics("val/")
        self.test_metrics = self._metrics("test/")

    def _metrics(self, prefix: str) -> MetricCollection:
        n = self.hparams.num_classes
        if self.hparams.label_type == "multilabel":
            return MetricCollection({"acc": MultilabelAccuracy(num_labels=n)}, prefix=prefix)
        metrics = {"acc": MulticlassAccuracy(num_classes=n, top_k=1, average="micro")}
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes=n, top_k=5, average="micro")
        return MetricCollection(metrics, prefix=prefix)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.is_floating_point() and target.ndim == 2:  # mixup soft targets or multi-label
            if self.hparams.label_type == "multilabel":
                return F.binary_cross_entropy_with_logits(logits, target)
            return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)

    def _targets(self, batch: dict[str, Any]) -> Tensor:
        y = batch["label"]
        return y.float() if self.hparams.label_type == "multilabel" else y

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_encoder:
            self.model.encoder.eval()  # no dropout / drop-path in a frozen encoder

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, target = batch["image"], self._targets(batch)
        hard = target
        if self.mixup is not None and self.hparams.label_type == "multiclass":
            images, target = self.mixup(images, target)
        logits = self(images)
        loss = self.loss(logits, target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        if self.hparams.label_type == "multiclass":
            acc = (logits.argmax(-1) == hard).float().mean()  # on mixed images: a rough signal only
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def _eval_step(self, batch: dict[str, Any], metrics: MetricCollection) -> Tensor:
        target = self._targets(batch)
        logits = self(batch["image"])
        loss = self.loss(logits, target)
        prefix = metrics.prefix
        self.log(f"{prefix}loss", loss, on_epoch=True, sync_dist=True, batch_size=len(target), prog_bar=True)
        metrics.update(logits, target.long() if self.hparams.label_type == "multilabel" else target)
        self.log_dict(metrics, on_epoch=True, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._eval_step(batch, self.test_metrics)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["image"])
        return logits.sigmoid() if self.hparams.label_type == "multilabel" else logits.softmax(-1)

    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> ClassificationTask:
        """Data first (the head size is the number of classes), then the model, normalised
        like its pretrained weights unless the data config pins mean/std, then the task."""
        datamodule.setup("fit")
        num_classes = datamodule.num_classes
        if cfg.model.get("num_classes") not in (None, num_classes):
            names = datamodule.class_names
            raise ValueError(
                f"model.num_classes={cfg.model.num_classes} but the data has {num_classes} classes "
                f"({', '.join(names[:10])}{', ...' if num_classes > 10 else ''}); "
                "leave model.num_classes=null to take it from the data"
            )
        model = instantiate(cfg.model, num_classes=num_classes, _convert_="all")
        if cfg.data.get("mean") is None:
            datamodule.set_normalization(model.encoder.pretrained_cfg["mean"], model.encoder.pretrained_cfg["std"])
        # A partial: `config` would clash with instantiate's own first argument.
        return instantiate(cfg.task, _partial_=True, _convert_="all")(
            model=model, num_classes=num_classes, class_names=list(datamodule.class_names),
            config=OmegaConf.to_container(cfg, resolve=True),
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = build_adamw(self.model, hp.lr, hp.weight_decay, hp.betas, hp.layer_decay)
        return warmup_cosine_config(self.trainer, opt, hp.warmup_epochs, hp.min_lr_ratio)
