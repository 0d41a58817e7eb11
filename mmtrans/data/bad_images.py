"""Image files that do not decode: skip them in loaders, or find them all before training.

`data.on_bad_image=raise` (the default) lets `BadImageError` stop the run, naming the file.
With `skip`:

* `SkipBadImages` wraps a data set. In evaluation a bad sample becomes a `BadSample` that
  `SkippingCollate` drops from the batch (metrics cover the readable samples). In training
  its place goes to the next readable sample of the split, so every batch keeps its size:
  under DDP all processes must take the same optimizer steps, and an empty batch has none.
* `SkippingCollate` puts the dropped samples under `batch["skipped_images"]`
  (`[{"path", "reason"}, ...]`), which travels out of loader worker processes with the
  batch; a callback counts and reports them per epoch.

`find_bad_images` decodes every file of a data set once, up front (`data.validate=true`).
Data sets read from files take part by offering `image_files()`, `read_image(path)` and
`without_files(paths)`; in-memory ones (procedural, CIFAR, MedMNIST) have nothing to check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from mmtrans.data.io import BadImageError, shown

POLICIES = ("raise", "skip")
SKIPPED_KEY = "skipped_images"
# What a data set raises for an unreadable sample: a file that does not decode, or one that
# disappeared after the data set was listed.
_BAD = (BadImageError, FileNotFoundError)


@dataclass(frozen=True)
class BadSample:
    """A sample whose image could not be read: its file and the decoder's reason."""

    path: str
    reason: str

    @classmethod
    def from_error(cls, err: Exception) -> BadSample:
        if isinstance(err, BadImageError):
            return cls(err.path, err.reason)
        return cls(os.fspath(getattr(err, "filename", None) or "?"), getattr(err, "strerror", None) or str(err))

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}

    def __str__(self) -> str:
        return f"{shown(self.path)}: {self.reason}"


def has_files(dataset: Any) -> bool:
    """Whether `dataset` reads image files (and so can hold bad ones)."""
    return all(hasattr(dataset, name) for name in ("image_files", "read_image", "without_files"))


class SkipBadImages(Dataset):
    """`dataset` whose unreadable samples are dropped (`replace=False`) or replaced by the
    next readable sample of the split (`replace=True`, for training); see the module docstring.

    Every other attribute (`labels`, `class_names`, `all_captions`, ...) is the wrapped
    data set's. A replacement carries the dropped sample under `SKIPPED_KEY`, so it is counted
    once, where it was drawn.
    """

    def __init__(self, dataset: Dataset, replace: bool) -> None:
        self.dataset = dataset
        self.replace = replace

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "replace") or name.startswith("__"):  # unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except _BAD as err:
            bad = BadSample.from_error(err)
        if not self.replace:
            return bad
        n = len(self.dataset)
        for step in range(1, n):
            try:
                item = self.dataset[(index + step) % n]
            except _BAD:
                continue  # counted when it is drawn itself
            item[SKIPPED_KEY] = [bad]
            return item
        raise BadImageError(bad.path, f"{bad.reason}; and no sample of this split of {n} can be read")


class SkippingCollate:
    """Wraps a collate function (None: torch's default): drops `BadSample`s, lists them and
    the replaced ones under `SKIPPED_KEY`. A batch with no readable sample is
    `{"image": empty tensor, SKIPPED_KEY: [...]}`; tasks skip it (`is_empty_batch`)."""

    def __init__(self, collate: Callable[[list], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        good, skipped = [], []
        for item in batch:
            if isinstance(item, BadSample):
                skipped.append(item)
                continue
            skipped += item.pop(SKIPPED_KEY, ())
            good.append(item)
        out = self.collate(good) if good else {"image": torch.empty(0)}
        out[SKIPPED_KEY] = [s.as_dict() for s in skipped]
        return out


def is_empty_batch(batch: Any) -> bool:
    """True for the batch `SkippingCollate` makes when none of its samples could be read."""
    return isinstance(batch, dict) and SKIPPED_KEY in batch and len(batch["image"]) == 0


def find_bad_images(dataset: Any, workers: int | None = None) -> list[BadSample]:
    """Decode every file of `dataset` once (threads: decoders release the GIL); the bad ones,
    in file order. A data set without files gives []."""
    if not has_files(dataset):
        return []

    def check(path: str) -> BadSample | None:
        try:
            dataset.read_image(path)
        except _BAD as err:
            return BadSample.from_error(err)
        return None

    files: Iterable[str] = dataset.image_files()
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        return [bad for bad in pool.map(check, files) if bad is not None]


def format_bad_images(bad: Sequence[BadSample], limit: int = 20) -> str:
    """One line per bad file (at most `limit`, then how many more)."""
    lines = [f"  {b}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
