"""One Lightning DataModule for every image data set: transforms + a `Splits` factory -> loaders."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from mmtrans.data.bad_images import (
    POLICIES,
    BadSample,
    SkipBadImages,
    SkippingCollate,
    find_bad_images,
    format_bad_images,
    has_files,
)
from mmtrans.data.splits import Splits, class_counts, dataset_labels
from mmtrans.data.transforms import build_transform

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# Keys of `augment` that also shape the eval pipeline (resize ratio and resampling filter).
_EVAL_KEYS = ("crop_pct", "interpolation")
SAMPLERS = (None, "weighted")


def _name(factory: Callable) -> str:
    func = getattr(factory, "func", factory)  # functools.partial from `_partial_: true`
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"


def eval_transform(data_cfg: dict[str, Any], pretrained_cfg: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """The eval pipeline of a data config as a checkpoint stores it (`config["data"]`): what
    DataModule applies to val / test, for images met after training (the caption CLI)."""
    augment = data_cfg.get("augment") or {}
    return build_transform(
        data_cfg["img_size"], train=False, in_chans=data_cfg.get("in_chans", 3),
        mean=data_cfg.get("mean") or pretrained_cfg["mean"], std=data_cfg.get("std") or pretrained_cfg["std"],
        **{k: augment[k] for k in _EVAL_KEYS if k in augment},
    )


class _SwappableTransform:
    """A transform whose pipeline can be replaced after the datasets hold it.

    train.py learns the model's normalisation only after `setup()` has built the datasets
    (it needs num_classes first); swapping the pipeline here updates every dataset without
    rebuilding the splits. A module-level class so that it pickles into loader workers.
    """

    def __init__(self, pipeline: Callable[[Image.Image], torch.Tensor]) -> None:
        self.pipeline = pipeline

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.pipeline(img)

    def __repr__(self) -> str:
        return repr(self.pipeline)


class DataModule(L.LightningDataModule):
    """Builds train/eval transforms, calls `splits(train_transform=..., eval_transform=...)`
    once in `setup()` and serves the three loaders.

    `splits` is any callable returning `Splits` (in configs, a `_partial_: true` factory such
    as `mmtrans.data.shapes.shapes_splits`); every other keyword (`root`, `download`, `path`,
    ...) that is not None is passed on to it. `on_bad_image`: "raise" stops at the first
    image file that does not decode, naming it; "skip" leaves such samples out and reports
    them (`mmtrans.data.bad_images`). `validate=true` decodes every file once in `setup()`
    and reports all bad ones before training (an error with "raise"). `sampler="weighted"` draws training samples
    with probability 1 / (size of their class), for imbalanced single-label data. `augment` holds keyword arguments of
    `build_transform` for training; its `crop_pct` and `interpolation` apply to eval too.
    Normalisation: explicit `mean`/`std`, else whatever `set_normalization` gave (the
    pretrained model's statistics), else 0.5 per channel.
    """

    def __init__(
        self,
        splits: Callable[..., Splits],
        collate: Callable | None = None,
        img_size: int = 32,
        in_chans: int = 3,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        drop_last: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: dict | None = None,
        sampler: str | None = None,
        on_bad_image: str = "raise",
        validate: bool = False,
        **source: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(
                f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}"
            )
        if (mean is None) != (std is None):
            raise ValueError("set both data.mean and data.std, or neither")
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {SAMPLERS}, got {sampler!r}")
        if on_bad_image not in POLICIES:
            raise ValueError(f"data.on_bad_image must be one of {POLICIES}, got {on_bad_image!r}")
        self.splits_factory = splits
        # Where the data lives and how to read it: the other data.* keys (root, download,
        # annotations, path, name, label_type, ...) go to the split builder; None leaves the
        # builder's default.
        self.source_kwargs = {k: v for k, v in source.items() if v is not None}
        self.sampler = sampler
        self.collate = collate  # None: torch's default collate (image classification)
        self.img_size = img_size
        self.in_chans = in_chans
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.drop_last = drop_last
        self.mean = tuple(mean) if mean is not None else DEFAULT_MEAN
        self.std = tuple(std) if std is not None else DEFAULT_STD
        self.augment = dict(augment or {})
        self.on_bad_image = on_bad_image
        self.validate = validate
        self.invalid_images: list[dict[str, str]] = []  # found by validate and left out (skip)
        self._train_transform: _SwappableTransform | None = None
        self._eval_transform: _SwappableTransform | None = None
        self._splits: Splits | None = None

    # -- transforms -------------------------------------------------------------------------

    def _build_transforms(self) -> tuple[Callable, Callable]:
        common = {"img_size": self.img_size, "mean": self.mean, "std": self.std, "in_chans": self.in_chans}
        eval_kwargs = {k: self.augment[k] for k in _EVAL_KEYS if k in self.augment}
        return (
            build_transform(train=True, **common, **self.augment),
            build_transform(train=False, **common, **eval_kwargs),
        )

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise with `mean`/`std` (e.g. the pretrained model's); works before or after setup."""
        self.mean, self.std = tuple(mean), tuple(std)
        if self._train_transform is not None and self._eval_transform is not None:
            self._train_transform.pipeline, self._eval_transform.pipeline = self._build_transforms()

    # -- data sets --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the splits once; later calls (Lightning calls setup per stage) do nothing."""
        if self._splits is None:
            train_tf, eval_tf = self._build_transforms()
            self._train_transform, self._eval_transform = (
                _SwappableTransform(train_tf),
                _SwappableTransform(eval_tf),
            )
            try:
                splits = self.splits_factory(
                    train_transform=self._train_transform, eval_transform=self._eval_transform, **self.source_kwargs
                )
            except TypeError as err:
                unknown = [k for k in self.source_kwargs if f"'{k}'" in str(err)]
                if not unknown or "unexpected keyword" not in str(err):
                    raise
                raise ValueError(
                    f"data.{unknown[0]} is not an option of this data set ({_name(self.splits_factory)}): "
                    "check the spelling, or see its data config"
                ) from err
            if not isinstance(splits, Splits):
                raise TypeError(f"data.splits must return mmtrans.data.Splits, got {type(splits).__name__}")
            if self.validate:
                splits = self._validated(splits)
            if self.on_bad_image == "skip":
                splits = self._skipping(splits)
            for name in ("train", "val", "test"):
                dataset = getattr(splits, name)
                if dataset is not None and len(dataset) == 0:
                    raise ValueError(
                        f"the {name} split is empty: check data.splits (paths, fractions, sizes)"
                    )
            if splits.class_names and splits.num_classes < 2:  # captions have no classes
                raise ValueError(
                    f"classification needs at least 2 classes, the data has {splits.class_names}"
                )
            self._splits = splits
        if stage in (None, "fit"):
            self._check_train_batch()

    def _validated(self, splits: Splits) -> Splits:
        """`data.validate=true`: every file decoded once; bad ones listed, then an error
        ("raise") or left out of their split ("skip")."""
        start = time.perf_counter()
        parts = {name: getattr(splits, name) for name in ("train", "val", "test")}
        checked: dict[str, Any] = {}
        for name, d in parts.items():  # the test split may be the val split itself: check it once
            if d is not None and has_files(d) and all(d is not other for other in checked.values()):
                checked[name] = d
        if not checked:
            print("data.validate: this data set is generated or held in memory; no image files to check")
            return splits
        bad: dict[str, list[BadSample]] = {name: find_bad_images(d) for name, d in checked.items()}
        n_files = sum(len(d.image_files()) for d in checked.values())
        everything = [b for found in bad.values() for b in found]
        took = time.perf_counter() - start
        if not everything:
            print(f"data.validate: {n_files} image files of {'/'.join(checked)} decoded in {took:.1f} s: all readable")
            return splits
        summary = f"data.validate: {len(everything)} of {n_files} image files cannot be read"
        if self.on_bad_image == "raise":
            raise ValueError(
                f"{summary}:\n{format_bad_images(everything)}\n"
                "Fix or remove them, or set data.on_bad_image=skip to train without them."
            )
        print(f"{summary}; left out (data.on_bad_image=skip):\n{format_bad_images(everything)}")
        self.invalid_images = [{**b.as_dict(), "split": name} for name, found in bad.items() for b in found]
        paths = {b.path for b in everything}
        kept = {id(d): d.without_files(paths) for d in checked.values()}
        return dataclasses.replace(splits, **{n: kept.get(id(d), d) for n, d in parts.items()})

    @staticmethod
    def _skipping(splits: Splits) -> Splits:
        """`data.on_bad_image=skip`: train replaces a bad sample, val / test drop it."""
        return dataclasses.replace(
            splits,
            train=SkipBadImages(splits.train, replace=True),
            val=SkipBadImages(splits.val, replace=False),
            test=SkipBadImages(splits.test, replace=False) if splits.test is not None else None,
        )

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            raise RuntimeError("the DataModule is not set up yet: call setup() first")
        return self._splits

    @property
    def class_names(self) -> list[str]:
        return self.splits.class_names

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    def _check_train_batch(self) -> None:
        # With drop_last, a train split smaller than one batch gives zero steps per epoch:
        # Lightning would then "train" silently without ever updating the model.
        size = len(self.splits.train)
        if self.drop_last and size < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the train split ({size} samples) and "
                f"data.drop_last=true would leave no batch: lower data.batch_size or set data.drop_last=false"
            )

    # -- loaders ----------------------------------------------------------------------------

    def _weighted_sampler(self, dataset: Dataset) -> WeightedRandomSampler:
        """Draw each class equally often: sample weight 1 / (training samples of its class)."""
        labels = dataset_labels(dataset)
        if labels.ndim != 1:
            raise ValueError(
                "data.sampler=weighted needs one label per sample; for multilabel data use "
                "task.class_weights=balanced (a per-label positive weight in the loss)"
            )
        counts = class_counts(labels, int(labels.max()) + 1)
        weights = 1.0 / counts[labels]
        return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(labels), replacement=True)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.num_workers > 0
        sampler = self._weighted_sampler(dataset) if train and self.sampler == "weighted" else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers,
            collate_fn=SkippingCollate(self.collate) if self.on_bad_image == "skip" else self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        self._check_train_batch()
        return self._loader(self.splits.train, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        # Sources without a test split (e.g. ImageFolder train/val) are tested on val.
        test = self.splits.test if self.splits.test is not None else self.splits.val
        return self._loader(test, self.eval_batch_size, train=False)
