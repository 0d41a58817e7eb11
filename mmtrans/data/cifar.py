"""CIFAR-10 / CIFAR-100 from the official python pickles, via torchvision, as dict datasets."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from mmtrans.data.on_device import InMemory
from mmtrans.data.splits import Splits, check_fractions, stratified_split
from mmtrans.data.transforms import to_tensor

Transform = Callable[[Image.Image], torch.Tensor]
_SOURCES = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


class CifarDataset(Dataset):
    """Rows `indices` of a CIFAR array -> `{"image", "label", "id": "<name>/<split>/<row>"}`."""

    def __init__(
        self,
        data: np.ndarray,
        targets: Sequence[int],
        indices: Sequence[int],
        class_names: Sequence[str],
        transform: Transform | None = None,
        id_prefix: str = "cifar",
    ) -> None:
        self.data = data  # [N, 32, 32, 3] uint8, shared between the train and val subsets
        self.targets = list(targets)
        self.indices = list(indices)
        self.class_names = list(class_names)
        self.transform = transform
        self.id_prefix = id_prefix

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """[N] int64 class indices of this subset (class weights, samplers)."""
        return np.asarray(self.targets, dtype=np.int64)[self.indices]

    def __getitem__(self, index: int) -> dict:
        row = self.indices[index]
        image = Image.fromarray(self.data[row], "RGB")
        tensor = self.transform(image) if self.transform is not None else to_tensor(image)
        return {"image": tensor, "label": int(self.targets[row]), "id": f"{self.id_prefix}/{row}"}

    def in_memory(self) -> InMemory:
        """This subset's rows of the uint8 array (data.on_device)."""
        return InMemory(self.data[self.indices], self.labels, [f"{self.id_prefix}/{row}" for row in self.indices])


def _missing_files(root: Path, source: type) -> list[Path]:
    folder = root / source.base_folder
    names = [name for name, _ in source.train_list + source.test_list] + [source.meta["filename"]]
    return [folder / name for name in names if not (folder / name).is_file()]


def _load(source: type, root: Path, train: bool) -> datasets.VisionDataset:
    try:
        return source(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision's md5 check failed: a partial or damaged copy
        raise ValueError(
            f"CIFAR files under {root / source.base_folder} are corrupted ({err}); delete the folder and "
            f"extract {source.filename} again, or pass download=True (config: data.download=true; needs network)"
        ) from err


def cifar_splits(
    root: str | os.PathLike,
    name: str = "cifar10",
    download: bool = False,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """CIFAR splits: val is a seeded, stratified `val_fraction` of the official train set,
    test is the official test set.

    Files are expected at `<root>/cifar-10-batches-py` (or `<root>/cifar-100-python`). A
    download happens only with `download=True`; without network it fails with a message
    that says which archive to put where.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown CIFAR name {name!r}; choose one of {', '.join(_SOURCES)}")
    check_fractions(val_fraction)
    source = _SOURCES[name]
    root = Path(root).expanduser()
    if download and _missing_files(root, source):
        try:
            source(str(root), train=True, download=True)
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
            raise RuntimeError(
                f"could not download {name} from {source.url} into {root} ({type(err).__name__}: {err}). "
                f"Without network, fetch {source.filename} elsewhere and extract it so that "
                f"{root / source.base_folder} exists"
            ) from err
    missing = _missing_files(root, source)
    if missing:
        raise FileNotFoundError(
            f"{name} not found: expected {missing[0]} (folder {root / source.base_folder}, extracted "
            f"from {source.filename}). Put it there, or pass download=True (config: data.download=true) to download it (needs network)"
        )

    train_set, test_set = _load(source, root, train=True), _load(source, root, train=False)
    class_names = list(train_set.classes)
    train_idx, val_idx, _ = stratified_split(train_set.targets, val_fraction, 0.0, seed)
    return Splits(
        train=CifarDataset(
            train_set.data, train_set.targets, train_idx, class_names, train_transform, f"{name}/train"
        ),
        val=CifarDataset(
            train_set.data, train_set.targets, val_idx, class_names, eval_transform, f"{name}/train"
        ),
        test=CifarDataset(
            test_set.data,
            test_set.targets,
            range(len(test_set.targets)),
            class_names,
            eval_transform,
            f"{name}/test",
        ),
        class_names=class_names,
    )
