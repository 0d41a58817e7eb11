"""Image-text retrieval (CLIP) as a LightningModule: contrastive training, Recall@K evaluation.

Training: each image with one of its captions (a random reference per step when the data
serves all of them, ``data.train_mode=images``), the other pairs of the global batch as
negatives: CLIP's symmetric cross-entropy with a learned temperature, features gathered
across DDP processes with gradients (``mmtrans.models.clip.contrastive_loss``).
Validation/test: every image against every reference caption of the split, image -> text and
text -> image Recall@1/5/10 and median rank (``mmtrans.metrics.retrieval``); at test time
``retrieval.json`` holds the top-k of each query. The tokenizer travels inside checkpoints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from mmtrans.data.bad_images import is_empty_batch
from mmtrans.metrics.retrieval import retrieval_metrics, text_keys, top_k
from mmtrans.models.clip import contrastive_chance_loss, contrastive_loss
from mmtrans.optim import adamw, param_groups
from mmtrans.text import CaptionTokenizer
from tasks.caption_tokenizer import build_tokenizer, tokenise_in_loader
from tasks.checkpoint import checkpoint_config
from tasks.schedule import warmup_cosine_config

__all__ = ["RetrievalTask", "sample_references"]


def sample_references(counts: list[int], k: int = 1) -> Tensor:
    """Rows of ``k`` references per image, image-major, into the image-major rows of all
    references (``counts[i]`` of image ``i``): drawn at random without replacement while
    there are enough (torch's generator, so seeded runs repeat)."""
    rows, start = [], 0
    for n in counts:
        order = torch.randperm(n).tolist()
        while len(order) < k:  # fewer references than k: repeat some
            order += torch.randperm(n).tolist()
        rows += [start + i for i in order[:k]]
        start += n
    return torch.tensor(rows, dtype=torch.long)


class RetrievalTask(L.LightningModule):
    # The model factories this task builds a model with (checked first: tasks/task_fit.py).
    MODEL_TARGETS = ("mmtrans.models.create_clip",)
    DATA_YIELDS = "captions"  # captioned images

    def __init__(
        self,
        model: nn.Module,
        tokenizer: CaptionTokenizer,
        config: dict | None = None,
        preprocessing: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        max_len: int = 32,
        top_k: int = 5,
        captions_per_image: int = 1,
    ) -> None:
        """``model``: a ``ContrastiveModel`` (anything whose ``forward(images, tokens,
        key_padding_mask)`` gives image embeddings, text embeddings and ``exp(logit_scale)``, with
        ``encode_image`` and ``encode_text(tokens, key_padding_mask)`` for evaluation).
        ``top_k``: candidates per query in retrieval.json. ``captions_per_image``: references of
        each image per training step (1: CLIP; more: each image is trained against several of its
        captions at once, the multi-positive loss of ``contrastive_loss``)."""
        super().__init__()
        if top_k < 1 or captions_per_image < 1:
            raise ValueError(f"task.top_k and task.captions_per_image must be >= 1, got {top_k}, {captions_per_image}")
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.model = model
        self.tokenizer = tokenizer
        self._outputs: list[tuple[str, Tensor, list[str], Tensor]] = []
        self._epoch_loss: list[Tensor] = []  # this epoch's loss and chance level per step (on_train_epoch_end)
        self._epoch_chance: list[float] = []
        self._warned_chance = False

    @staticmethod
    def _require(batch: dict[str, Any], key: str) -> None:
        if key not in batch:
            raise ValueError(
                "retrieval batches carry token ids, tokenised in the loader by mmtrans.data.captions.CaptionCollate "
                f"(set by RetrievalTask.build via DataModule.set_collate); this batch has only {sorted(batch)}"
            )

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images = batch["image"]
        k = self.hparams.captions_per_image
        if "caption" in batch:  # (image, caption) pairs
            if k != 1:
                raise ValueError(f"task.captions_per_image={k} needs every reference of an image in a batch: "
                                 "set data.train_mode=images")
            self._require(batch, "tokens")
            tokens, pad = batch["tokens"], batch["padding_mask"]
        else:  # every reference of each image: k of them, at random
            self._require(batch, "ref_tokens")
            # Counts from the text (host lists): no device sync per step.
            rows = sample_references([len(r) for r in batch["captions"]], k).to(batch["ref_tokens"].device)
            tokens, pad = batch["ref_tokens"][rows], batch["ref_padding_mask"][rows]
        # Through the model's forward, which compile=true compiles (encode_image/encode_text alone
        # would run uncompiled).
        image_emb, text_emb, scale = self.model(images, tokens, pad)
        loss = contrastive_loss(image_emb, text_emb, scale, texts_per_image=k)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        self._epoch_loss.append(loss.detach())
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self._epoch_chance.append(contrastive_chance_loss(len(images) * world, k))
        self.log("train/logit_scale", scale.detach(), on_step=True, on_epoch=False, batch_size=len(images))
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_loss, self._epoch_chance = [], []

    def on_train_epoch_end(self) -> None:
        """Warn (once) when, from the second epoch after the warm-up on (the third at the
        earliest), the epoch's mean training loss has not fallen 1 % below chance
        (``contrastive_chance_loss``, log of the batch's candidates): the model has learned
        nothing to rank by yet (its Recall@K is near that of a random ranking)."""
        first = max(2, math.ceil(self.hparams.warmup_epochs) + 1)
        if self._warned_chance or self.current_epoch < first or not self._epoch_loss:
            return
        loss = torch.stack(self._epoch_loss).float().mean().item()
        chance = sum(self._epoch_chance) / len(self._epoch_chance)
        if loss >= 0.99 * chance:  # collapsed embeddings sit at chance, random ones above it
            self._warned_chance = True
            rank_zero_warn(
                f"retrieval: epoch {self.current_epoch}'s mean train/loss {loss:.3f} has not fallen 1 % below chance ({chance:.3f}, "
                "the loss of embeddings that tell no image-text pair from another): the model is not learning to "
                "match them. Check that each caption belongs to its image, then try a lower task.lr or a longer "
                "task.warmup_epochs.")

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        if is_empty_batch(batch):  # every image unreadable, with data.on_bad_image=skip
            return
        self._require(batch, "ref_tokens")
        image_emb = self.model.encode_image(batch["image"]).float().cpu()
        text_emb = self.model.encode_text(batch["ref_tokens"], batch["ref_padding_mask"]).float().cpu()
        refs = [list(r) for r in batch["captions"]]
        start = 0
        for image_id, emb, captions in zip(batch["image_id"], image_emb, refs):
            self._outputs.append((str(image_id), emb, captions, text_emb[start:start + len(captions)]))
            start += len(captions)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def _gathered(self) -> list[tuple[str, Tensor, list[str], Tensor]]:
        outputs, self._outputs = self._outputs, []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, outputs)
            outputs = [o for part in parts for o in part]
        return list({o[0]: o for o in outputs}.values())  # a distributed sampler may repeat images

    def _evaluate(self, split: str) -> dict[str, Any] | None:
        outputs = self._gathered()
        if not outputs:
            return None
        images = torch.stack([o[1] for o in outputs])
        texts = torch.cat([o[3] for o in outputs])
        text_image = torch.cat([torch.full((len(o[2]),), i) for i, o in enumerate(outputs)])
        sim = images @ texts.T
        # A caption written identically for several images is a reference of each of them.
        metrics = retrieval_metrics(sim, text_image, text_key=text_keys([c for o in outputs for c in o[2]]))
        for name, value in metrics.items():  # every process logs the same (gathered) value
            self.log(f"{split}/{name}", value, prog_bar=name in ("i2t_r1", "t2i_r1"), rank_zero_only=False)
        return {"outputs": outputs, "sim": sim, "metrics": metrics}

    def on_validation_epoch_end(self) -> None:
        self._evaluate("val")

    def on_test_epoch_end(self) -> None:
        result = self._evaluate("test")
        if result is not None and self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir) / "retrieval.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.top_k_report(**result), indent=1) + "\n")

    def top_k_report(self, outputs: list, sim: Tensor, metrics: dict[str, float]) -> dict[str, Any]:
        """The ``top_k`` captions of each image and images of each caption, with scores and
        whether each candidate is a reference (by text, as the metrics count: a caption
        written identically for another image matches too)."""
        k = self.hparams.top_k
        ids = [o[0] for o in outputs]
        captions = [(c, i) for i, o in enumerate(outputs) for c in o[2]]
        t_index, t_score = top_k(sim, k)
        i_index, i_score = top_k(sim.T, k)
        image_to_text = [
            {"image_id": ids[i], "references": outputs[i][2],
             "top_k": [{"caption": captions[j][0], "image_id": ids[captions[j][1]], "score": round(float(s), 4),
                        "match": captions[j][0] in outputs[i][2]} for j, s in zip(t_index[i].tolist(), t_score[i])]}
            for i in range(len(ids))
        ]
        text_to_image = [
            {"caption": c, "image_id": ids[img],
             "top_k": [{"image_id": ids[j], "score": round(float(s), 4), "match": c in outputs[j][2]}
                       for j, s in zip(i_index[t].tolist(), i_score[t])]}
            for t, (c, img) in enumerate(captions)
        ]
        return {"metrics": metrics, "image_to_text": image_to_text, "text_to_image": text_to_image}

    # -- checkpoint and optimiser ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.tokenizer.to_json()  # a plain string: weights_only-safe

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = param_groups(self.model, hp.lr, hp.weight_decay)
        return warmup_cosine_config(self.trainer, adamw(groups, hp.lr, hp.betas), hp.warmup_epochs, hp.min_lr_ratio)

    # -- construction from the config (train.py) -------------------------------------------
    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> RetrievalTask:
        """Tokenizer (trained on the training captions, or pretrained), model sized to its
        vocabulary and built for the data's resolved preprocessing, then the task."""
        datamodule.setup("fit")
        if cfg.model.get("pretrained") and not (cfg.task.get("tokenizer") or {}).get("pretrained"):
            raise ValueError("model.pretrained (CLIP weights) needs their tokenizer: set task.tokenizer.pretrained "
                             "to a local Hugging Face tokenizer folder (e.g. openai/clip-vit-base-patch32's)")
        tokenizer = build_tokenizer(cfg, datamodule)
        tokenise_in_loader(cfg, datamodule, tokenizer, references=True)  # every reference is embedded
        pp = datamodule.preprocessing
        model = instantiate(cfg.model, vocab_size=tokenizer.vocab_size, img_size=pp.img_size, in_chans=pp.in_chans,
                            _convert_="all")
        want = getattr(model.encoder, "pretrained_cfg", {})
        if cfg.model.get("pretrained") and [round(v, 4) for v in (*pp.mean, *pp.std)] != [
                round(v, 4) for v in (*want["mean"], *want["std"])]:
            mean, std = (",".join(f"{v:.8g}" for v in want[k]) for k in ("mean", "std"))
            raise ValueError(f"the CLIP weights {cfg.model.pretrained} expect images normalised with mean "
                             f"{list(want['mean'])} and std {list(want['std'])}, the data gives {list(pp.mean)} and "
                             f"{list(pp.std)}: add data.mean=[{mean}] data.std=[{std}]")
        config = checkpoint_config(cfg, pp, model)
        config["model"].update(getattr(model, "arch", None) or {})  # what pretrained weights implied
        kwargs = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "tokenizer"}
        return instantiate(kwargs, _partial_=True, _convert_="all")(
            model=model, tokenizer=tokenizer, config=config, preprocessing=pp.as_dict()
        )
