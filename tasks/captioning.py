"""Image captioning as a LightningModule: teacher forcing, generation, COCO metrics.

Training: cross-entropy on the shifted caption tokens (padding ignored, label smoothing).
Validation/test: captions generated on the KV cache (greedy or beam search) and scored
against all references with pycocoevalcap's BLEU-1..4, CIDEr-D and ROUGE-L. The tokenizer
travels inside every checkpoint, so a checkpoint alone captions new images.

CoCa (``contrastive_weight > 0``): the model is built with text-only first decoder blocks and
a contrastive head (``mmtrans.models.clip.CoCa``), and CLIP's contrastive loss on the
(image, caption) pairs of the batch is added: ``caption_weight * CE + contrastive_weight *
contrastive``. With ``contrastive_weight=0`` the plain captioner is built and trained as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch.distributed as dist
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mmtrans.data.bad_images import is_empty_batch
from mmtrans.generation import caption_images
from mmtrans.metrics import caption_scores
from mmtrans.models.clip import contrastive_loss
from mmtrans.optim import adamw, param_groups
from mmtrans.text import CaptionTokenizer
from mmtrans.viz import caption_grid
from tasks.caption_tokenizer import build_tokenizer, tokenise_in_loader
from tasks.checkpoint import checkpoint_config
from tasks.schedule import warmup_cosine_config

__all__ = ["CaptioningTask"]

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l")


class CaptioningTask(L.LightningModule):
    # The model factories this task builds a model with (checked first: tasks/task_fit.py).
    MODEL_TARGETS = ("mmtrans.models.create_captioner",)
    DATA_YIELDS = "captions"  # captioned images

    def __init__(
        self,
        model: nn.Module,
        tokenizer: CaptionTokenizer,
        config: dict | None = None,
        preprocessing: dict | None = None,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.1,
        max_len: int = 32,
        generation: dict | None = None,
        num_logged_samples: int = 6,
        caption_weight: float = 1.0,
        contrastive_weight: float = 0.0,
    ) -> None:
        """``generation``: ``num_beams`` (1 = greedy), ``max_new_tokens``, ``length_penalty``,
        ``no_repeat_ngram_size``, ``min_new_tokens``. ``encoder_lr``: None = ``lr``.
        ``contrastive_weight`` > 0 (CoCa) needs a model with ``forward_contrastive``."""
        super().__init__()
        if contrastive_weight < 0 or caption_weight < 0 or contrastive_weight + caption_weight == 0:
            raise ValueError(f"task.caption_weight={caption_weight} and task.contrastive_weight={contrastive_weight} "
                             "must be >= 0 and not both 0")
        if contrastive_weight > 0 and not hasattr(model, "forward_contrastive"):
            raise ValueError(f"task.contrastive_weight={contrastive_weight} needs a contrastive captioner (CoCa: "
                             f"create_captioner(contrastive=True), which build() makes); got {type(model).__name__}")
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.model = model
        self.tokenizer = tokenizer
        self.generation = {"num_beams": 1, "max_new_tokens": max_len - 1, **(generation or {})}
        self._outputs: list[tuple[str, str, list[str]]] = []
        self._sample_images: list[Tensor] = []  # the first few evaluated images, for the grid
        self._truncation_warned = False

    # -- training ---------------------------------------------------------------------------
    def forward(self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self.model(images, tokens, key_padding_mask=key_padding_mask)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if "tokens" not in batch:
            raise ValueError(
                "captioning training batches carry token ids, tokenised in the loader by "
                "mmtrans.data.captions.CaptionCollate (set by CaptioningTask.build via DataModule.set_collate); "
                f"this batch has only {sorted(batch)}"
            )
        tokens, pad, n_truncated = batch["tokens"], batch["padding_mask"], int(batch["num_truncated"])
        if n_truncated and not self._truncation_warned:
            self._truncation_warned = True
            print(f"warning: {n_truncated} caption(s) in a batch were cut to task.max_len={self.hparams.max_len} "
                  "tokens (warned once; the epoch's count is logged as train/truncated_captions)")
        self.log("train/truncated_captions", float(n_truncated), on_step=False, on_epoch=True, reduce_fx="sum",
                 batch_size=1)
        hp = self.hparams
        if hp.contrastive_weight > 0:  # CoCa: the caption loss plus an image-text contrastive loss
            # Through the model's forward, which compile=true compiles (nn.Module.compile).
            logits, image_emb, text_emb = self.model(
                batch["image"], tokens[:, :-1], key_padding_mask=pad[:, :-1], contrastive=True)
        else:
            logits = self(batch["image"], tokens[:, :-1], key_padding_mask=pad[:, :-1])
        # Mask by the padding mask, not by pad_id: GPT-2 style tokenizers use eos as pad.
        target = tokens[:, 1:].masked_fill(pad[:, 1:], -100)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                               label_smoothing=hp.label_smoothing)
        if hp.contrastive_weight > 0:
            contrastive = contrastive_loss(image_emb, text_emb, self.model.head.scale())
            self.log("train/caption_loss", loss, on_step=False, on_epoch=True, batch_size=len(tokens))
            self.log("train/contrastive_loss", contrastive, on_step=False, on_epoch=True, batch_size=len(tokens))
            loss = hp.caption_weight * loss + hp.contrastive_weight * contrastive
        elif hp.caption_weight != 1.0:
            loss = hp.caption_weight * loss
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(tokens))
        return loss

    # -- generation and evaluation ----------------------------------------------------------
    def generate(self, images: Tensor, **overrides: Any) -> list[str]:
        """Captions for a batch of images (eval mode is the caller's business)."""
        return caption_images(self.model, self.tokenizer, images, **{**self.generation, **overrides})

    def _eval_step(self, batch: dict[str, Any]) -> None:
        if len(self._sample_images) < self.hparams.num_logged_samples:
            self._sample_images += list(batch["image"][: self.hparams.num_logged_samples - len(self._sample_images)])
        for image_id, caption, refs in zip(batch["image_id"], self.generate(batch["image"]), batch["captions"]):
            self._outputs.append((str(image_id), caption, list(refs)))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not is_empty_batch(batch):  # every image unreadable, with data.on_bad_image=skip
            self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not is_empty_batch(batch):
            self._eval_step(batch)

    def _gathered_outputs(self) -> list[tuple[str, str, list[str]]]:
        outputs, self._outputs = self._outputs, []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, outputs)
            outputs = [o for part in parts for o in part]
        return list({o[0]: o for o in outputs}.values())  # a distributed sampler may repeat images

    def _score(self, split: str) -> list[tuple[str, str, list[str]]]:
        outputs = self._gathered_outputs()
        if not outputs:
            return outputs
        scores = caption_scores({i: c for i, c, _ in outputs}, {i: r for i, _, r in outputs})
        for name in METRICS:  # every rank logs the same (gathered) value
            self.log(f"{split}/{name}", scores[name], prog_bar=name in ("bleu4", "cider"))
        samples, self._sample_images = self._sample_images, []
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            shown = outputs[: len(samples)]
            for image_id, caption, refs in shown:
                print(f"  [{split}] {image_id}: {caption!r}  (ref: {refs[0]!r})")
            if shown:  # rank 0's first images are its first outputs (gathered rank-major)
                folder = Path(self.trainer.default_root_dir) / "samples"
                folder.mkdir(parents=True, exist_ok=True)
                grid = caption_grid(samples[: len(shown)], [c for _, c, _ in shown], [r[0] for _, _, r in shown])
                name = f"val_epoch{self.current_epoch:03d}.png" if split == "val" else f"{split}.png"
                grid.save(folder / name)
        return outputs

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        outputs = self._score("test")
        if self.trainer.is_global_zero and outputs:
            out = Path(self.trainer.default_root_dir) / "captions.json"
            results = [{"image_id": i, "caption": c} for i, c, _ in outputs]  # COCO results format
            out.write_text(json.dumps(results, indent=1) + "\n")

    def setup(self, stage: str) -> None:
        """Under DDP every process trained the tokenizer on the same captions (deterministic;
        only rank 0 wrote it): check that they agree before any step, as the model's vocabulary
        and the token ids in every process's batches depend on it."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            mine = self.tokenizer.to_json()
            every: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(every, mine)
            differing = [rank for rank, text in enumerate(every) if text != every[0]]
            if differing:
                raise RuntimeError(
                    f"the caption tokenizer differs between process 0 and process(es) {differing}: "
                    "train it once (task.tokenizer.pretrained=<folder written by a run>) and rerun"
                )

    # -- checkpoint and optimiser ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.tokenizer.to_json()  # a plain string: weights_only-safe

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        enc_lr = hp.encoder_lr if hp.encoder_lr is not None else hp.lr
        groups = []
        for name, module in self.model.named_children():
            if any(p.requires_grad for p in module.parameters()):
                groups += param_groups(module, enc_lr if name == "encoder" else hp.lr, hp.weight_decay)
        return warmup_cosine_config(self.trainer, adamw(groups, hp.lr, hp.betas), hp.warmup_epochs, hp.min_lr_ratio)

    # -- construction from the config (train.py) -------------------------------------------
    @classmethod
    def build(cls, cfg: DictConfig, datamodule: L.LightningDataModule) -> CaptioningTask:
        """Tokenizer (trained on the training captions, or pretrained), model sized to its
        vocabulary and built for the data's resolved preprocessing, then the task."""
        datamodule.setup("fit")
        tokenizer = build_tokenizer(cfg, datamodule)
        tokenise_in_loader(cfg, datamodule, tokenizer)
        pp = datamodule.preprocessing
        # CoCa: the same captioner config, built with text-only first blocks and a contrastive head.
        coca = {"contrastive": True} if cfg.task.get("contrastive_weight", 0) > 0 else {}
        model = instantiate(cfg.model, vocab_size=tokenizer.vocab_size, img_size=pp.img_size, in_chans=pp.in_chans,
                            _convert_="all", **coca)
        config = checkpoint_config(cfg, pp, model)
        config["model"].update(coca)
        if getattr(model.decoder, "arch", None):  # a GPT-2 decoder: rebuilt later without its files
            config["model"]["decoder_arch"] = model.decoder.arch
        kwargs = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "tokenizer"}
        return instantiate(kwargs, _partial_=True, _convert_="all")(
            model=model, tokenizer=tokenizer, config=config, preprocessing=pp.as_dict()
        )
