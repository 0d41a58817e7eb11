"""Zero-shot image classification with an image-text model: no training, class names only.

Each class name goes through every prompt template (``"a photo of a {}."``); the text
embeddings of a class are averaged (and normalised again, as CLIP does) into one classifier
row; an image's class scores are its cosine similarities to the rows times the model's
temperature. Reports test top-1 / top-5 accuracy and, through ``mmtrans.metrics.medical``,
AUC (and the label type's other clinical metrics) on any classification or MedMNIST data:
binary sets score the positive class's softmax probability, multi-label sets each label's
similarity (mapped to [0, 1]; only the ranking, and so AUC, is meaningful there).

    python train.py task=zeroshot ckpt_path=<a task=retrieval or CoCa checkpoint> data=shapes
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mmtrans.data.bad_images import is_empty_batch
from mmtrans.metrics.medical import medical_metrics
from mmtrans.text import CaptionTokenizer
from tasks.checkpoint import load_model
from tasks.medical import PredictionStore

__all__ = ["ZeroShotTask", "check_templates"]


def check_templates(templates: Any) -> list[str]:
    """The templates as a list of strings, each with one ``{}`` for the class name."""
    if isinstance(templates, str) or not templates:
        raise ValueError(f"task.templates must be a non-empty list of prompts with {{}} for the class name, "
                         f"e.g. ['a photo of a {{}}.'], got {templates!r}")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ValueError(f"task.templates: each prompt needs exactly one {{}} where the class name goes; "
                         f"{bad[0]!r} has {bad[0].count('{}') if isinstance(bad[0], str) else 'no'}")
    return list(templates)


class ZeroShotTask(L.LightningModule):
    # No model group: the model comes from ckpt_path (tasks/task_fit.py checks nothing of it).
    MODEL_TARGETS = None
    DATA_YIELDS = "labels"  # class names to prompt with, labels to score against

    def __init__(
        self,
        model: nn.Module,
        tokenizer: CaptionTokenizer,
        class_names: list[str],
        templates: list[str],
        label_type: str = "multiclass",
        max_len: int = 32,
        threshold: float = 0.5,
        config: dict | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        """``model``: ``encode_image``, ``encode_text(tokens, key_padding_mask)`` and
        ``head.scale()`` (``ContrastiveModel`` or ``CoCa``)."""
        super().__init__()
        if not class_names:
            raise ValueError("zero-shot classification needs class names, and the data gives none: set "
                             "data.class_names=[...] (MedMNIST, CSV) or use a data set with named classes")
        if not all(hasattr(model, m) for m in ("encode_image", "encode_text", "head")):
            raise ValueError(f"{type(model).__name__} has no text encoder (encode_text): zero-shot needs an "
                             "image-text model, a task=retrieval or CoCa captioning checkpoint")
        self.templates = check_templates(templates)
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.model = model
        self.tokenizer = tokenizer
        self.register_buffer("class_embeddings", None, persistent=False)
        self.store = PredictionStore()

    @torch.no_grad()
    def embed_classes(self) -> Tensor:
        """``[K, E]``: per class, the mean of its normalised prompt embeddings, normalised."""
        rows = []
        for name in self.hparams.class_names:
            prompts = [t.format(name.replace("_", " ")) for t in self.templates]
            tokens, pad, _ = self.tokenizer.encode_batch(prompts, self.hparams.max_len)
            emb = self.model.encode_text(tokens.to(self.device), pad.to(self.device)).float()
            rows.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
        return torch.stack(rows)

    def on_test_start(self) -> None:
        self.class_embeddings = self.embed_classes()  # after the checkpoint's weights are loaded

    def scores(self, images: Tensor) -> Tensor:
        """What the metrics read: [B] P(positive) (binary), [B, K] otherwise."""
        sim = self.model.encode_image(images).float() @ self.class_embeddings.T
        if self.hparams.label_type == "multilabel":
            return (sim + 1) / 2
        probs = (self.model.head.scale().float() * sim).softmax(-1)
        return probs[:, 1] if self.hparams.label_type == "binary" else probs

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not is_empty_batch(batch):
            self.store.update(self.scores(batch["image"]), batch["label"])

    def on_test_epoch_end(self) -> None:
        probs, target = self.store.predictions()
        self.store.reset()
        label_type = self.hparams.label_type
        values = medical_metrics(probs, target.long(), label_type, threshold=self.hparams.threshold)
        out = {"auc": values["auc"], "acc": values["acc"]}
        if label_type in ("multiclass", "ordinal"):  # acc is top-1 there
            k = probs.shape[1]
            if k > 5:
                top5 = probs.topk(5, dim=1).indices
                out["acc_top5"] = float((top5 == target[:, None]).any(1).float().mean())
        for name, value in out.items():  # gathered across processes by the store already
            self.log(f"test/{name}", float(value), prog_bar=True, rank_zero_only=False)

    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> ZeroShotTask:
        """The image-text model and tokenizer of ``ckpt_path``, the data's class names."""
        if not cfg.ckpt_path:
            raise ValueError("task=zeroshot classifies with a trained image-text model: give its checkpoint, "
                             "ckpt_path=<a task=retrieval (or CoCa captioning) run>/checkpoints/last.ckpt")
        if cfg.train:
            raise ValueError("task=zeroshot does not train: set train=false (the task's default)")
        model, info = load_model(cfg.ckpt_path)
        tokenizer = info.get("tokenizer")
        if tokenizer is None or not hasattr(model, "encode_text"):
            raise ValueError(f"checkpoint {cfg.ckpt_path} has no text encoder ({type(model).__name__}): zero-shot "
                             "needs a task=retrieval or CoCa captioning (task.contrastive_weight > 0) checkpoint")
        datamodule.setup("test")
        text = model.text if hasattr(model, "text") else model.decoder
        kwargs = OmegaConf.to_container(cfg.task, resolve=True)
        kwargs.pop("_target_", None)
        return cls(model=model, tokenizer=tokenizer, class_names=list(datamodule.class_names),
                   label_type=datamodule.splits.label_type or "multiclass", max_len=text.max_len,
                   config=info.get("config"), preprocessing=datamodule.preprocessing.as_dict(), **kwargs)
