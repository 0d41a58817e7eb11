"""The tokenizer of a caption-reading task (captioning, retrieval), built once per run, and
handed to the data loader's collate so that tokenising runs in the loader workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as L
from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from mmtrans.data.captions import CaptionCollate
from mmtrans.text import CaptionTokenizer

__all__ = ["build_tokenizer", "tokenise_in_loader"]


def build_tokenizer(cfg: DictConfig, datamodule: L.LightningDataModule) -> CaptionTokenizer:
    """A pretrained tokenizer (``task.tokenizer.pretrained``), or a BPE trained on the training
    captions (``task.tokenizer.vocab_size``); saved in the run folder by rank 0 only (under DDP
    every process trains the same one from the same captions)."""
    # Set before training, so that every DDP process (its launcher passes the environment on)
    # trains it the same way: loader workers tokenise one batch each, and the tokenizer's own
    # threads would only compete with them (and warn after the fork).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok_cfg = cfg.task.get("tokenizer") or {}
    if tok_cfg.get("pretrained"):
        tokenizer = CaptionTokenizer.from_pretrained(tok_cfg.pretrained)
    else:
        tokenizer = CaptionTokenizer.train(datamodule.splits.train.all_captions(), vocab_size=tok_cfg.get("vocab_size", 1000))
    if rank_zero_only.rank == 0:
        tokenizer.save(Path(cfg.paths.output_dir) / "tokenizer")
    return tokenizer


def tokenise_in_loader(cfg: DictConfig, datamodule: L.LightningDataModule, tokenizer: CaptionTokenizer,
                       references: bool = False) -> None:
    """Give the DataModule's collate the tokenizer before any loader exists (the workers take a
    copy): training captions become token ids there, and with ``references`` every reference
    of an image too (``CaptionCollate``)."""
    collate = datamodule.collate if datamodule.collate is not None else CaptionCollate()  # data=webdataset
    if not hasattr(collate, "with_tokenizer"):
        raise ValueError(f"task={cfg.task_name} tokenises in the data loader: data.collate must be "
                         f"mmtrans.data.captions.CaptionCollate (or have its with_tokenizer), got {collate!r}")
    datamodule.set_collate(collate.with_tokenizer(tokenizer, cfg.task.max_len, references))
