"""One Lightning DataModule for every image data set: transforms + a `Splits` factory -> loaders."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, WeightedRandomSampler

from mmtrans.data.bad_images import (
    POLICIES,
    BadSample,
    SkipBadImages,
    SkippingCollate,
    find_bad_images,
    format_bad_images,
    has_files,
)
from mmtrans.data.preprocessing import Preprocessing, resolve_preprocessing
from mmtrans.data.samplers import RepeatAugSampler
from mmtrans.data.splits import Splits, class_counts, dataset_labels, describe_source, split_options

SAMPLERS = (None, "weighted")


class DataModule(L.LightningDataModule):
    """Builds train/eval transforms, calls `splits(train_transform=..., eval_transform=...)`
    once in `setup()` and serves the three loaders.

    `splits` is any callable returning `Splits` (in configs, a `_partial_: true` factory such
    as `mmtrans.data.shapes.shapes_splits`); every other keyword (`root`, `download`, `path`,
    ...) that is not None is passed on to it. `on_bad_image`: "raise" stops at the first
    image file that does not decode, naming it; "skip" leaves such samples out and reports
    them (`mmtrans.data.bad_images`). `validate=true` decodes every file once in `setup()`
    and reports all bad ones before training (an error with "raise"). `sampler="weighted"` draws training samples
    with probability 1 / (size of their class), for imbalanced single-label data;
    `repeated_aug=k` serves each drawn training image k times in a row (DeiT's repeated
    augmentation, `mmtrans.data.samplers.RepeatAugSampler`), an epoch as long as the data. `augment` holds keyword arguments of
    `build_transform` for training; its `crop_pct` and `interpolation` apply to eval too.

    `preprocessing` (image size, channels, resampling, crop, mean/std) is resolved once, here:
    `img_size` / `in_chans` / `mean` / `std` / `augment` as given, else what the data says
    (e.g. a MedMNIST file's size and channels), else the encoder's `pretrained_cfg` (the
    statistics its weights expect, passed by train.py), else defaults. Models are built to
    its size and channels; checkpoints store it.
    """

    def __init__(
        self,
        splits: Callable[..., Splits],
        collate: Callable | None = None,
        img_size: int | None = None,
        in_chans: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        drop_last: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: dict | None = None,
        sampler: str | None = None,
        repeated_aug: int = 1,
        on_bad_image: str = "raise",
        validate: bool = False,
        pretrained_cfg: dict[str, Any] | None = None,
        **source: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(
                f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}"
            )
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not isinstance(repeated_aug, int) or repeated_aug < 1 or (repeated_aug > 1 and sampler is not None):
            raise ValueError(f"data.repeated_aug must be an integer >= 1 (and needs data.sampler=null), "
                             f"got {repeated_aug!r} with data.sampler={sampler!r}")
        if on_bad_image not in POLICIES:
            raise ValueError(f"data.on_bad_image must be one of {POLICIES}, got {on_bad_image!r}")
        if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"data.num_workers must be auto or an integer >= 0, got {num_workers!r}")
        self.splits_factory = splits
        # Where the data lives and how to read it: the other data.* keys (root, download,
        # annotations, path, name, label_type, ...) go to the split builder; None leaves the
        # builder's default.
        self.source_kwargs = split_options(splits, {k: v for k, v in source.items() if v is not None})
        self.sampler = sampler
        self.repeated_aug = repeated_aug
        self.collate = collate  # None: torch's default collate (image classification)
        self._loaders_made = False  # set_collate only before the first loader pickles it
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers_option = num_workers
        self.pin_memory_option = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.drop_last = drop_last
        self.augment = dict(augment or {})
        self.preprocessing: Preprocessing = resolve_preprocessing(
            img_size, in_chans, mean, std, self.augment,
            data=describe_source(splits, self.source_kwargs), pretrained=pretrained_cfg,
        )
        self.on_bad_image = on_bad_image
        self.validate = validate
        self.invalid_images: list[dict[str, str]] = []  # found by validate and left out (skip)
        self._splits: Splits | None = None

    # -- data sets --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the splits once; later calls (Lightning calls setup per stage) do nothing."""
        if self._splits is None:
            pp = self.preprocessing
            splits = self.splits_factory(
                train_transform=pp.transform(train=True, **self.augment), eval_transform=pp.transform(train=False),
                **self.source_kwargs, **self._resolved_options(),
            )
            if not isinstance(splits, Splits):
                raise TypeError(f"data.splits must return mmtrans.data.Splits, got {type(splits).__name__}")
            if self.validate:
                splits = self._validated(splits)
            if self.on_bad_image == "skip":
                splits = self._skipping(splits)
            for name in ("train", "val", "test"):
                dataset = getattr(splits, name)
                # A stream's length (eval shards) is unknown up front: its reader checks it.
                if dataset is not None and not isinstance(dataset, IterableDataset) and len(dataset) == 0:
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

    def _resolved_options(self) -> dict[str, Any]:
        """What the DataModule resolved, for split factories that take it: the image size and
        channels; the batch size and bad-image policy (streams, which batch and skip themselves)."""
        pp, accepted = self.preprocessing, split_options(self.splits_factory)
        resolved = {"img_size": pp.img_size, "in_chans": pp.in_chans, "batch_size": self.batch_size,
                    "on_bad_image": self.on_bad_image}
        return {k: v for k, v in resolved.items() if k in accepted}

    def raw_splits(self) -> Splits:
        """The splits as stored: `image` an untransformed PIL image (no resize, augmentation or
        normalisation), captions with all references per image. For writing shards."""
        extra = {"train_mode": "images"} if "train_mode" in split_options(self.splits_factory) else {}
        return self.splits_factory(train_transform=_unchanged, eval_transform=_unchanged,
                                   **self.source_kwargs, **self._resolved_options(), **extra)

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
        """`data.on_bad_image=skip`: train replaces a bad sample, val / test drop it. Streams
        (IterableDataset: shards) apply the policy themselves."""
        if isinstance(splits.train, IterableDataset):
            return splits
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

    def set_collate(self, collate: Callable) -> None:
        """Use `collate` for every loader (e.g. a `CaptionCollate` holding the tokenizer the task
        trained after `setup`). Only before the first loader: workers take a copy of it."""
        if self._loaders_made:
            raise RuntimeError("DataModule.set_collate: loaders were already created with the old collate")
        self.collate = collate

    def _on_gpu_and_processes(self) -> tuple[bool, int]:
        """(whether the attached Trainer trains on a GPU, its processes on this machine);
        without a Trainer: whether CUDA is there, one process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return torch.cuda.is_available(), 1
        return trainer.strategy.root_device.type == "cuda", max(1, trainer.num_devices)

    @property
    def num_workers(self) -> int:
        """`data.num_workers` with `auto` resolved (`resolve_num_workers`)."""
        on_gpu, processes = self._on_gpu_and_processes()
        return resolve_num_workers(self.num_workers_option, on_gpu, processes)

    @property
    def pin_memory(self) -> bool:
        return self._on_gpu_and_processes()[0] if self.pin_memory_option is None else self.pin_memory_option

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
        self._loaders_made = True
        num_workers = self.num_workers
        workers = num_workers > 0
        sampler = None
        stream = isinstance(dataset, IterableDataset)  # shuffles and splits among processes itself
        if stream and (self.sampler is not None or self.repeated_aug > 1):
            raise ValueError("data.sampler and data.repeated_aug need a data set with an index, not a stream "
                             "(data=webdataset): leave them at null and 1")
        if train and self.sampler == "weighted":
            sampler = self._weighted_sampler(dataset)
        elif train and self.repeated_aug > 1:
            # One stream; under DDP Lightning's sampler wrapper deals it out to the processes.
            sampler = RepeatAugSampler(len(dataset), self.repeated_aug, seed=torch.initial_seed() % 2**31,
                                       num_replicas=1, rank=0, selected_round=0)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None and not stream,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers,
            prefetch_factor=self.prefetch_factor if workers else None,
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


def _unchanged(image: Any) -> Any:
    """The identity transform (a function, not a lambda: loaders may pickle it)."""
    return image


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: what a scheduler or taskset gave it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str, on_gpu: bool, processes: int = 1) -> int:
    """`data.num_workers`: an int as given; `auto`: min(8, available cores // training processes
    on this machine) when training on a GPU (at least 1), else 0."""
    if value != "auto":
        return int(value)
    if not on_gpu:
        return 0
    return max(1, min(8, available_cpus() // max(1, processes)))
