"""Image captioning data sets from caption files, the split by image, and the collate function.

`CaptionDataset` serves either every image with all its references (mode="images", for
evaluation) or one item per (image, caption) pair (mode="pairs", for training). Data sets
stay text-level; `CaptionCollate` tokenises the training captions in the loader (its worker
processes), with the tokenizer the task hands it once trained.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mmtrans.data.caption_formats import (
    CaptionRecord,
    read_caption_table,
    read_coco,
    read_flickr8k,
    read_karpathy,
)
from mmtrans.data.io import load_image
from mmtrans.data.splits import Splits, check_fractions
from mmtrans.data.transforms import to_tensor

Transform = Callable[[Image.Image], torch.Tensor]
MODES = ("images", "pairs")
FORMATS = ("coco", "karpathy", "flickr8k", "table")


class CaptionDataset(Dataset):
    """Captioned images from `records`, opened lazily.

    mode="images": `{"image": Tensor, "captions": [str, ...], "image_id": str}` per image.
    mode="pairs": `{"image": Tensor, "caption": str, "image_id": str}` per (image, caption).
    A relative `record.path` is taken relative to `root`.
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        transform: Transform | None = None,
        root: str | os.PathLike | None = None,
        mode: str = "images",
        draft_size: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.records = list(records)
        self.transform = transform
        self.root = root
        self.mode = mode
        self.draft_size = draft_size
        # (record, caption) of every pair, as flat arrays: cheap to pickle into workers.
        counts = np.array([len(r.captions) for r in self.records], dtype=np.int64)
        self._pair_record = np.repeat(np.arange(len(self.records)), counts)
        self._pair_caption = np.arange(len(self._pair_record)) - np.repeat(np.cumsum(counts) - counts, counts)

    def __len__(self) -> int:
        return len(self._pair_record) if self.mode == "pairs" else len(self.records)

    @property
    def num_images(self) -> int:
        return len(self.records)

    def all_captions(self) -> list[str]:
        """Every reference caption, without opening images (tokenizer training)."""
        return [c for r in self.records for c in r.captions]

    def _path(self, record: CaptionRecord) -> str:
        return os.path.join(self.root, record.path) if self.root is not None else record.path

    def image_files(self) -> list[str]:
        return list(dict.fromkeys(self._path(r) for r in self.records))

    def read_image(self, path: str) -> Image.Image:
        return load_image(path, "RGB", self.draft_size)

    def without_files(self, paths: Collection[str]) -> CaptionDataset:
        """A copy without the images of `paths` (and their captions)."""
        kept = [r for r in self.records if self._path(r) not in paths]
        return CaptionDataset(kept, self.transform, self.root, self.mode, self.draft_size)

    def _image(self, record: CaptionRecord) -> torch.Tensor:
        image = self.read_image(self._path(record))
        return self.transform(image) if self.transform is not None else to_tensor(image)

    def __getitem__(self, index: int) -> dict:
        if self.mode == "images":
            record = self.records[index]
            return {
                "image": self._image(record),
                "captions": list(record.captions),
                "image_id": record.image_id,
            }
        record = self.records[self._pair_record[index]]
        caption = record.captions[self._pair_caption[index]]
        return {"image": self._image(record), "caption": caption, "image_id": record.image_id}


def collate_captions(batch: Sequence[dict]) -> dict:
    """Stack `image` into [B, C, H, W]; every other key (captions, caption, image_id) becomes a list."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict = {"image": torch.stack([item["image"] for item in batch])}
    for key in batch[0]:
        if key != "image":
            out[key] = [item[key] for item in batch]
    return out


class CaptionCollate:
    """`collate_captions`, and with a tokenizer (a `CaptionTokenizer`, or anything with its
    `encode_batch`) the training captions (`caption`, one per item) as `tokens` (LongTensor
    [B, L], bos ... eos, right-padded), `padding_mask` (BoolTensor [B, L], True = pad) and
    `num_truncated` (captions cut to `max_len`). Batches of all references (`captions`) are
    left as text, unless `references=True` (retrieval, which embeds every reference): then
    they are tokenised too, image-major, as `ref_tokens` and `ref_padding_mask` (the rows of
    image i follow those of images < i: `len(captions[i])` each); the text stays in `captions`.

    Built without a tokenizer from the config; the captioning and retrieval tasks, once they
    have their tokenizer, pass `with_tokenizer(...)` to the DataModule before any loader
    exists, so the tokenizer is pickled into the loader workers and tokenising runs there.
    """

    def __init__(self, tokenizer: Any = None, max_len: int | None = None, references: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.references = references

    def with_tokenizer(self, tokenizer: Any, max_len: int | None, references: bool = False) -> CaptionCollate:
        return CaptionCollate(tokenizer, max_len, references)

    def __call__(self, batch: Sequence[dict]) -> dict:
        out = collate_captions(batch)
        if self.tokenizer is None:
            return out
        if "caption" in out:
            tokens, padding_mask, num_truncated = self.tokenizer.encode_batch(out["caption"], self.max_len)
            out.update(tokens=tokens, padding_mask=padding_mask, num_truncated=num_truncated)
        if self.references and "captions" in out:
            flat = [c for refs in out["captions"] for c in refs]
            tokens, padding_mask, num_truncated = self.tokenizer.encode_batch(flat, self.max_len)
            out.update(ref_tokens=tokens, ref_padding_mask=padding_mask, num_truncated=num_truncated)
        return out


def read_captions(
    format: str,
    annotations: str | os.PathLike,
    root: str | os.PathLike,
    split_files: dict[str, str | os.PathLike] | None = None,
) -> list[CaptionRecord]:
    """Records of `annotations` in `format` ("coco", "karpathy", "flickr8k", "table"), images under `root`."""
    if format == "coco":
        return read_coco(annotations, root)
    if format == "karpathy":
        return read_karpathy(annotations, root)
    if format == "flickr8k":
        return read_flickr8k(annotations, root, split_files)
    if format in ("table", "csv", "jsonl"):
        return read_caption_table(annotations, root)
    raise ValueError(f"unknown caption format {format!r}; known: {FORMATS}")


def split_by_image(
    records: Sequence[CaptionRecord], val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[list[CaptionRecord], list[CaptionRecord], list[CaptionRecord]]:
    """Seeded shuffle of the images into (train, val, test); all captions of an image stay together.

    A positive fraction gets at least one image as long as train keeps one. Each part keeps
    the file order of its records.
    """
    check_fractions(val_fraction, test_fraction)
    n = len(records)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(round(n * val_fraction), 1) if val_fraction > 0 else 0
    n_test = max(round(n * test_fraction), 1) if test_fraction > 0 else 0
    n_test = max(0, min(n_test, n - 1 - n_val))
    n_val = max(0, min(n_val, n - 1))
    parts = np.split(order, [n_val, n_val + n_test])
    val, test, train = ([records[i] for i in sorted(part.tolist())] for part in parts)
    return train, val, test


def caption_splits(
    format: str,
    annotations: str | os.PathLike,
    root: str | os.PathLike,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    split_files: dict[str, str | os.PathLike] | None = None,
    train_mode: str = "pairs",
    draft_size: int | None = None,
) -> Splits:
    """Train / val / test captioning data sets, split by image.

    The format's own split is used when it has one (Karpathy, Flickr8k with `split_files`,
    a table with a `split` column); otherwise images are shuffled with `seed` and cut by the
    fractions. Train is served in `train_mode` ("pairs" by default); val and test serve
    images with all their references. With no test images, `Splits.test` is None.
    """
    records = read_captions(format, annotations, root, split_files)
    with_split = [r for r in records if r.split is not None]
    if with_split and len(with_split) != len(records):
        missing = next(r.image_id for r in records if r.split is None)
        raise ValueError(f"{annotations}: some images have a split and some do not (e.g. {missing!r})")
    if with_split:
        parts = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
        train, val, test = parts["train"], parts["val"], parts["test"]
    else:
        train, val, test = split_by_image(records, val_fraction, test_fraction, seed)
    for name, part in (("train", train), ("val", val)):
        if not part:
            raise ValueError(
                f"{annotations}: the {name} split is empty ({len(records)} images in all); "
                f"give the file a {name} split or more images"
            )
    return Splits(
        train=CaptionDataset(train, train_transform, mode=train_mode, draft_size=draft_size),
        val=CaptionDataset(val, eval_transform, draft_size=draft_size),
        test=CaptionDataset(test, eval_transform, draft_size=draft_size) if test else None,
        class_names=[],
    )


caption_splits.yields = "captions"  # read by tasks/task_fit.py: captioning and pretrain take it, classifiers do not
