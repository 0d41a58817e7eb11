"""Image classification from a folder tree (the torchvision ImageFolder convention).

Two layouts are accepted under `root`:

* `root/<class>/<image>`: one folder per class; train / val / test are carved out of each
  class by a seeded shuffle (stratified, reproducible for a given seed).
* `root/train/<class>/...` and `root/val/<class>/...`, optionally `root/test/<class>/...`:
  splits given by the folders. Without `test/`, the test split is the val split.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mmtrans.data.io import load_image
from mmtrans.data.splits import Splits, check_fractions, stratified_split
from mmtrans.data.transforms import to_tensor

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
Transform = Callable[[Image.Image], torch.Tensor]


class ImageFolderDataset(Dataset):
    """(path, label) samples -> `{"image": Tensor, "label": int, "id": path}`.

    Files are opened lazily in `__getitem__`; an unreadable file raises ValueError naming it.
    `mode` is what the file is converted to before `transform` (the transform may convert
    again, e.g. to grey). `draft_size` is passed to `load_image` to decode big JPEGs faster.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        class_names: Sequence[str],
        transform: Transform | None = None,
        mode: str = "RGB",
        draft_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.transform = transform
        self.mode = mode
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        """[N] int64 class indices (class weights, samplers), without opening an image."""
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def image_files(self) -> list[str]:
        return [path for path, _ in self.samples]

    def read_image(self, path: str) -> Image.Image:
        return load_image(path, self.mode, self.draft_size)

    def without_files(self, paths: Collection[str]) -> ImageFolderDataset:
        """A copy without the samples of `paths` (files found unreadable up front)."""
        kept = copy.copy(self)
        kept.samples = [s for s in self.samples if s[0] not in paths]
        return kept

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        image = self.read_image(path)
        tensor = self.transform(image) if self.transform is not None else to_tensor(image)
        return {"image": tensor, "label": label, "id": path}


def _visible_dirs(folder: Path) -> list[str]:
    # Hidden folders (.git, .ipynb_checkpoints, ...) are never classes.
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def iter_image_files(folder: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> Iterator[str]:
    """Image files under `folder`, recursively, one directory listing at a time (memory stays
    bounded for any number of files); names sorted within each folder, sub-folders after files.

    Extensions are case-insensitive. Hidden files and folders are skipped: macOS "._name.jpg"
    resource forks look like images but are not.
    """
    exts = tuple(e.lower() for e in extensions)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(exts):
                yield os.path.join(dirpath, f)


def find_images(folder: str | os.PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> list[str]:
    """All image files under `folder` (`iter_image_files`), as one sorted list."""
    return sorted(iter_image_files(folder, extensions))


def _scan(
    folder: Path, extensions: Sequence[str], class_names: list[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples of one folder of class folders; with `class_names`, its classes must be among them."""
    found = _visible_dirs(folder)
    if not found:
        raise ValueError(f"no class folders in {folder}: expected one sub-folder of images per class")
    if class_names is None:
        class_names = found
    else:
        unknown = [c for c in found if c not in class_names]
        if unknown:
            raise ValueError(
                f"{folder} has class folder {unknown[0]!r} that is not a class of the train split "
                f"(classes: {', '.join(class_names)})"
            )
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for name in found:
        files = find_images(folder / name, extensions)
        if not files:
            raise ValueError(
                f"class folder {folder / name} has no images (looked for {', '.join(extensions)})"
            )
        samples += [(f, index[name]) for f in files]
    return samples, class_names


def image_folder_splits(
    root: str | os.PathLike,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    draft_size: int | None = None,
) -> Splits:
    """Splits from `root` in either layout (see the module docstring).

    Class names are the sorted class folders of the whole tree (class-folder layout) or of
    `train/` (train/val layout). The fractions are used only by the class-folder layout;
    a class with too few images fills train first, then val, then test. With
    test_fraction=0 there is no test split (`Splits.test` is None).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"data root {root} (data.root) does not exist: expected a folder of class folders, "
            f"or train/ and val/ folders of class folders"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"data root {root} (data.root) is not a folder")

    def dataset(samples: list[tuple[str, int]], transform: Transform | None) -> ImageFolderDataset:
        return ImageFolderDataset(samples, class_names, transform, draft_size=draft_size)

    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise ValueError(
                f"{root} has train/ but no val/: add val/ (with class folders), "
                f"or put the class folders directly under {root} to split them by fraction"
            )
        train_samples, class_names = _scan(root / "train", extensions)
        val_samples, _ = _scan(root / "val", extensions, class_names)
        val = dataset(val_samples, eval_transform)
        test = val
        if (root / "test").is_dir():
            test = dataset(_scan(root / "test", extensions, class_names)[0], eval_transform)
        return Splits(dataset(train_samples, train_transform), val, test, class_names)

    check_fractions(val_fraction, test_fraction)
    samples, class_names = _scan(root, extensions)
    train_idx, val_idx, test_idx = stratified_split(
        [s[1] for s in samples], val_fraction, test_fraction, seed
    )
    test = dataset([samples[i] for i in test_idx], eval_transform) if test_fraction > 0 else None
    return Splits(
        train=dataset([samples[i] for i in train_idx], train_transform),
        val=dataset([samples[i] for i in val_idx], eval_transform),
        test=test,
        class_names=class_names,
    )
