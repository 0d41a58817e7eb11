"""Image classification as a LightningModule: training, evaluation, optimiser and schedule.

The model is any ``nn.Module`` mapping images to logits (``ImageClassifier`` by default).
Everything needed to rebuild it (resolved config, class names) is in ``hparams`` and so in
every checkpoint; ``tasks.checkpoint.load_model`` rebuilds a model from a checkpoint alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy, MultilabelAccuracy

from mmtrans.data.bad_images import is_empty_batch
from mmtrans.data.splits import LABEL_TYPES, class_counts, dataset_labels
from mmtrans.models.heads import head_outputs
from mmtrans.optim import SAM, build_adamw
from tasks.checkpoint import checkpoint_config
from tasks.schedule import warmup_cosine_config

__all__ = ["TTA", "ClassificationTask", "balanced_class_weights"]

TTA = (None, "hflip")  # task.tta: test-time augmentation of evaluation and prediction


class ClassificationTask(L.LightningModule):
    # The model factories this task builds a model with (checked first: tasks/task_fit.py).
    MODEL_TARGETS = ("mmtrans.models.create_image_classifier", "mmtrans.models.create_cnn_classifier")
    DATA_YIELDS = "labels"  # labelled images (a split factory's `yields`, default "labels")

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: list[str] | None = None,
        config: dict | None = None,
        preprocessing: dict | None = None,
        label_type: str | None = None,
        class_weights: str | list[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        layer_decay: float | None = None,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.1,
        mixup: dict | None = None,
        freeze_encoder: bool = False,
        tta: str | None = None,
        sam_rho: float | None = None,
    ) -> None:
        """``mixup``: keyword arguments of timm's ``Mixup`` (``mixup_alpha``, ``cutmix_alpha``,
        ``prob``, ...), or None; multiclass, ordinal and binary labels (not multilabel).
        ``freeze_encoder``: train the head only (linear probe). ``tta``: test-time augmentation
        of val, test and predict: "hflip" averages the logits of each image and its mirror
        image (for data trained with horizontal flips), None: none. ``sam_rho``: train with
        sharpness-aware minimisation of that radius (``mmtrans.optim.SAM``; twice the
        passes per step; the logged train loss averages the two; with ``mixup`` each pass mixes
        anew), None: plain AdamW.
        ``preprocessing``: ``Preprocessing.as_dict()`` of the data it was trained on (stored in
        checkpoints: how to feed the model new images). ``label_type``: one of LABEL_TYPES (None: multiclass); binary has one logit and a
        sigmoid, multilabel one sigmoid per label, multiclass and ordinal a softmax (ordinal
        grades are trained as classes, as MedMNIST's baselines do, so that AUC and ACC are
        comparable with its tables). ``class_weights``: per-class loss weights (CE), or
        positive weights (binary / multilabel BCE); ``build`` turns "balanced" into numbers
        from the training label counts."""
        super().__init__()
        label_type = label_type or "multiclass"
        if label_type not in LABEL_TYPES:
            raise ValueError(f"task.label_type must be one of {LABEL_TYPES}, got {label_type!r}")
        if isinstance(class_weights, str):
            raise ValueError(f"task.class_weights={class_weights!r} is resolved by build(); pass numbers here")
        if class_weights is not None and len(class_weights) != (1 if label_type == "binary" else num_classes):
            raise ValueError(f"{len(class_weights)} class_weights for label_type={label_type}, {num_classes} classes")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        if tta not in TTA:
            raise ValueError(f"task.tta must be one of {TTA}, got {tta!r}")
        if sam_rho is not None and not sam_rho > 0:
            raise ValueError(f"task.sam_rho must be > 0 (the SAM radius) or null (plain AdamW), got {sam_rho!r}")
        self.save_hyperparameters(ignore=["model"])
        self.hparams.label_type = label_type
        self.model = model
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("loss_weight", weights, persistent=False)
        if freeze_encoder:
            model.encoder.requires_grad_(False)
        self.mixup = None
        if mixup:
            if label_type == "multilabel":
                raise ValueError(f"task.mixup={dict(mixup)} needs one label per image (timm's Mixup mixes class "
                                 "indices); label_type=multilabel has several: set task.mixup=null")
            from timm.data import Mixup

            # Binary: mixed over the two classes, the positive column is the soft BCE target.
            self.mixup = Mixup(**{"label_smoothing": label_smoothing, **mixup,
                                  "num_classes": 2 if label_type == "binary" else num_classes})
        self.val_metrics = self._metrics("val/")
        self.test_metrics = self._metrics("test/")

    def _metrics(self, prefix: str) -> MetricCollection:
        n = self.hparams.num_classes
        if self.hparams.label_type == "multilabel":
            return MetricCollection({"acc": MultilabelAccuracy(num_labels=n)}, prefix=prefix)
        if self.hparams.label_type == "binary":
            return MetricCollection({"acc": BinaryAccuracy()}, prefix=prefix)
        metrics = {"acc": MulticlassAccuracy(num_classes=n, top_k=1, average="micro")}
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes=n, top_k=5, average="micro")
        return MetricCollection(metrics, prefix=prefix)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def eval_logits(self, images: Tensor) -> Tensor:
        """Logits for evaluation and prediction: with ``tta="hflip"`` the mean of the image's and
        its mirror image's."""
        logits = self(images)
        if self.hparams.get("tta") == "hflip":
            logits = (logits + self(images.flip(-1))) / 2
        return logits

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        label_type, weight = self.hparams.label_type, self.loss_weight
        if label_type == "binary":
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=weight)
        if label_type == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight)
        if target.is_floating_point():  # mixup's soft targets
            log_probs = F.log_softmax(logits, dim=-1)
            if weight is not None:
                log_probs = log_probs * weight
            return torch.sum(-target * log_probs, dim=-1).mean()
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.hparams.label_smoothing)

    def probs(self, logits: Tensor) -> Tensor:
        """Scores the metrics read: [B] positive probability (binary), [B, K] otherwise."""
        if self.hparams.label_type == "binary":
            return logits[:, 0].sigmoid()
        return logits.sigmoid() if self.hparams.label_type == "multilabel" else logits.softmax(-1)

    def _targets(self, batch: dict[str, Any]) -> Tensor:
        y = batch["label"]
        return y.float() if self.hparams.label_type == "multilabel" else y

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_encoder:
            self.model.encoder.eval()  # no dropout / drop-path in a frozen encoder

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, target = batch["image"], self._targets(batch)
        hard = target
        if self.mixup is not None:  # soft targets of mixed images (timm's Mixup needs an even batch)
            images, target = self.mixup(images, target.long())
            if self.hparams.label_type == "binary":
                target = target[:, 1]
        logits = self(images)
        loss = self.loss(logits, target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        if self.hparams.label_type != "multilabel":
            # On mixed images a rough signal only.
            pred = logits[:, 0] > 0 if self.hparams.label_type == "binary" else logits.argmax(-1)
            acc = (pred == hard).float().mean()
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def _eval_step(self, batch: dict[str, Any], metrics: MetricCollection) -> Tensor:
        target = self._targets(batch)
        logits = self.eval_logits(batch["image"])
        loss = self.loss(logits, target)
        prefix = metrics.prefix
        self.log(f"{prefix}loss", loss, on_epoch=True, sync_dist=True, batch_size=len(target), prog_bar=True)
        metrics.update(self.probs(logits), target.long() if self.hparams.label_type == "multilabel" else target)
        self.log_dict(metrics, on_epoch=True, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return None if is_empty_batch(batch) else self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return None if is_empty_batch(batch) else self._eval_step(batch, self.test_metrics)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.probs(self.eval_logits(batch["image"]))

    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> ClassificationTask:
        """Data first (the head size is the number of classes; image size and channels are the
        data's resolved preprocessing), then the model, then the task."""
        datamodule.setup("fit")
        num_classes = datamodule.num_classes
        label_type = cfg.task.get("label_type") or datamodule.splits.label_type or "multiclass"
        if cfg.model.get("num_classes") not in (None, num_classes):
            names = datamodule.class_names
            raise ValueError(
                f"model.num_classes={cfg.model.num_classes} but the data has {num_classes} classes "
                f"({', '.join(names[:10])}{', ...' if num_classes > 10 else ''}); "
                "leave model.num_classes=null to take it from the data"
            )
        pp = datamodule.preprocessing
        model = instantiate(cfg.model, num_classes=head_outputs(label_type, num_classes), img_size=pp.img_size,
                            in_chans=pp.in_chans, _convert_="all")
        # A partial: `config` would clash with instantiate's own first argument.
        class_weights = cfg.task.get("class_weights")
        if class_weights == "balanced":
            labels = dataset_labels(datamodule.splits.train)
            class_weights = balanced_class_weights(labels, label_type, num_classes)
        return instantiate(cfg.task, _partial_=True, _convert_="all")(
            model=model, num_classes=num_classes, class_names=list(datamodule.class_names),
            config=checkpoint_config(cfg, pp, model), preprocessing=pp.as_dict(), label_type=label_type,
            class_weights=class_weights,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = build_adamw(self.model, hp.lr, hp.weight_decay, hp.betas, hp.layer_decay)
        if hp.sam_rho is not None:  # an __init__ argument: always in hparams, old checkpoints included
            opt = SAM(opt, hp.sam_rho)
        return warmup_cosine_config(self.trainer, opt, hp.warmup_epochs, hp.min_lr_ratio)


def balanced_class_weights(labels: Any, label_type: str, num_classes: int) -> list[float]:
    """Loss weights from training label counts ([N] or [N, K] array).

    multiclass / ordinal: n / (K * n_c) per class (scikit-learn's "balanced"); binary and
    multilabel: n_negative / n_positive per label, BCE's ``pos_weight``.
    """
    labels = np.asarray(labels)
    counts = class_counts(labels, num_classes)
    n = float(len(labels))
    if label_type in ("binary", "multilabel"):
        positives = counts[1:2] if label_type == "binary" else counts
        if (positives == 0).any() or (positives == n).any():
            raise ValueError(f"task.class_weights=balanced: a label is never (or always) positive in train {positives}")
        return [float(w) for w in (n - positives) / positives]
    if (counts == 0).any():
        empty = [i for i, c in enumerate(counts) if c == 0]
        raise ValueError(f"task.class_weights=balanced: classes {empty} have no training samples")
    return [float(w) for w in n / (num_classes * counts)]
