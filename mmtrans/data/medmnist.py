"""MedMNIST v2 `.npz` files: the official layout, label types from the set's name, offline first.

A file holds ``{train,val,test}_images`` (uint8 [N, H, W] grey or [N, H, W, 3] RGB) and
``{train,val,test}_labels`` ([N, 1] for single-label sets, [N, K] for chestmnist; some
re-saved copies store single labels flat as [N]: both are accepted). The label type comes
from the set's name where MedMNIST defines it (``MEDMNIST_INFO``), else from ``label_type``.

    medmnist_splits(path="breastmnist.npz", ...)                 # any local file, offline
    medmnist_splits(name="pathmnist", root="data", size=64)      # data/pathmnist_64.npz
    medmnist_splits(name="pathmnist", root="data", download=True) # fetch it once (online)
"""

from __future__ import annotations

import os
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mmtrans.data.on_device import InMemory
from mmtrans.data.splits import LABEL_TYPES, Splits, stratified_folds

__all__ = ["MEDMNIST_INFO", "MedMNISTDataset", "describe_medmnist", "medmnist_file_name", "medmnist_splits"]

# The 2-D sets of MedMNIST v2 (Yang et al., Scientific Data 2023): label type and class
# names as in medmnist's INFO (retinamnist grades are ordinal; MedMNIST's own baselines
# train them as 5-way classification).
MEDMNIST_INFO: dict[str, tuple[str, list[str]]] = {
    "pathmnist": ("multiclass", ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                                 "normal colon mucosa", "cancer-associated stroma", "adenocarcinoma epithelium"]),
    "chestmnist": ("multilabel", ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                                  "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                                  "pleural", "hernia"]),
    "dermamnist": ("multiclass", ["actinic keratoses", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
                                  "melanoma", "melanocytic nevi", "vascular lesions"]),
    "octmnist": ("multiclass", ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]),
    "pneumoniamnist": ("binary", ["normal", "pneumonia"]),
    "retinamnist": ("ordinal", ["0", "1", "2", "3", "4"]),
    "breastmnist": ("binary", ["malignant", "normal or benign"]),
    "bloodmnist": ("multiclass", ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                                  "monocyte", "neutrophil", "platelet"]),
    "tissuemnist": ("multiclass", ["collecting duct, connecting tubule", "distal convoluted tubule",
                                   "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                                   "podocytes", "proximal tubule segments", "thick ascending limb"]),
    **{
        f"organ{axis}mnist": ("multiclass", ["bladder", "femur-left", "femur-right", "heart", "kidney-left",
                                             "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"])
        for axis in "acs"
    },
}
SIZES = (28, 64, 128, 224)
# MedMNIST+ (v3) files on Zenodo; 28 px files carry no size suffix.
DOWNLOAD_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"
SPLIT_NAMES = ("train", "val", "test")


def medmnist_file_name(name: str, size: int = 28) -> str:
    if size not in SIZES:
        raise ValueError(f"MedMNIST size must be one of {SIZES}, got {size}")
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


class MedMNISTDataset(Dataset):
    """One split of a MedMNIST file: ``{"image": transform(PIL), "label": ..., "id": "<file>/<split>/<i>"}``.

    ``labels`` holds every label ([N] int64, or [N, K] float32 0/1 for multilabel) so that
    class weights and samplers need not touch the images.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        label_type: str,
        transform: Callable | None = None,
        id_prefix: str = "medmnist",
        ids: Sequence[str] | None = None,
    ) -> None:
        self.images = images
        self.ids = list(ids) if ids is not None else [f"{id_prefix}/{i}" for i in range(len(images))]
        self.labels = labels
        self.label_type = label_type
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        img = Image.fromarray(self.images[index])  # [H, W] -> "L", [H, W, 3] -> "RGB"
        label = self.labels[index]
        label_t = torch.from_numpy(label.copy()) if self.label_type == "multilabel" else torch.tensor(int(label))
        return {"image": self.transform(img) if self.transform else img, "label": label_t,
                "id": self.ids[index]}

    def in_memory(self) -> InMemory:
        """The split's uint8 array as stored (data.on_device)."""
        return InMemory(self.images, self.labels, self.ids)


def _resolve_file(path: str | None, name: str | None, root: str | None, size: int, download: bool) -> Path:
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"MedMNIST file {file} (data.path) does not exist")
        return file
    if not name:
        raise ValueError("give a MedMNIST file (data.path=FILE.npz) or a set name (data.name=breastmnist)")
    file = Path(root or ".") / medmnist_file_name(name, size)
    if file.is_file():
        return file
    url = DOWNLOAD_URL.format(file=file.name)
    if not download:
        raise FileNotFoundError(
            f"MedMNIST file {file} not found: place {file.name} there (from {url}), "
            f"point data.path at a local .npz, or set data.download=true to fetch it"
        )
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(".npz.part")
    try:
        urllib.request.urlretrieve(url, partial)  # noqa: S310 - a fixed https URL
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"cannot download {url} ({err}); without a network, place {file.name} in {file.parent} "
            "or point data.path at a local copy"
        ) from err
    os.replace(partial, file)  # a half-downloaded file never looks complete
    return file


def _check_labels(labels: np.ndarray, label_type: str, num_classes: int, file: Path, key: str) -> np.ndarray:
    """Labels as the datasets hold them, or a ValueError naming the file, key and shapes."""
    n = len(labels)
    if label_type == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise ValueError(
                f"{file}: '{key}' has shape {labels.shape}; a multilabel set with {num_classes} labels "
                f"needs [N, {num_classes}] 0/1 values"
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{file}: '{key}' holds values other than 0/1 for a multilabel set")
        return labels.astype(np.float32)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"{file}: '{key}' has shape {labels.shape}; a {label_type} set needs one label per image, "
            f"[N] or [N, 1] (N={n}); several label columns mean label_type=multilabel"
        )
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{file}: '{key}' holds labels {labels.min()}..{labels.max()}, outside 0..{num_classes - 1} "
            f"({num_classes} classes)"
        )
    return labels


def infer_label_type(labels: np.ndarray) -> str:
    """The label type of a set MedMNIST does not name: several 0/1 columns are multilabel,
    two values binary, more multiclass (ordinal grades must be asked for: data.label_type)."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return "multilabel"
    return "binary" if len(labels) and int(labels.max()) <= 1 else "multiclass"


def describe_medmnist(
    path: str | None = None, name: str | None = None, root: str | None = None, size: int = 28, download: bool = False
) -> dict[str, int]:
    """Image size and channels of a MedMNIST file, from the header of its ``train_images``
    array (nothing is decompressed): what the model and the transforms are built for."""
    file = _resolve_file(path, name, root, size, download)
    try:
        with zipfile.ZipFile(file) as archive, archive.open("train_images.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read_header(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read MedMNIST file {file}: no readable 'train_images' array ({err})") from err
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] != 3) or shape[1] != shape[2]:
        raise ValueError(f"{file}: 'train_images' has shape {shape}; expected [N, H, H] or [N, H, H, 3]")
    return {"img_size": int(shape[1]), "in_chans": 1 if len(shape) == 3 else 3}


def medmnist_splits(
    train_transform: Callable | None = None,
    eval_transform: Callable | None = None,
    path: str | None = None,
    name: str | None = None,
    root: str | None = None,
    size: int = 28,
    download: bool = False,
    label_type: str | None = None,
    class_names: list[str] | None = None,
    cv_folds: int | None = None,
    cv_fold: int = 0,
    cv_seed: int = 0,
) -> Splits:
    """Train/val/test of a MedMNIST `.npz` (``path``, or ``root/<name>[_<size>].npz``).

    ``label_type`` and ``class_names`` override what the set's name implies (the file's name
    when ``path`` is given, else ``name``); for a file MedMNIST does not name, the label type
    is inferred from its labels (``infer_label_type``) and class names are "0".."K-1".

    ``cv_folds``: k-fold cross-validation on the official train + val images (stratified by
    label, ``stratified_folds`` with ``cv_seed``): fold ``cv_fold`` is val, the other folds
    train; test stays the official test split. A few dozen val images cannot rank two
    recipes a few hundredths of AUC apart; the mean over k folds' val sees every image.
    """
    if cv_folds is not None and not (isinstance(cv_folds, int) and cv_folds >= 2):
        raise ValueError(f"data.cv_folds must be null or an integer >= 2, got {cv_folds!r}")
    if cv_folds is not None and not (isinstance(cv_fold, int) and 0 <= cv_fold < cv_folds):
        raise ValueError(f"data.cv_fold must be one of 0..{cv_folds - 1} (data.cv_folds={cv_folds}), got {cv_fold!r}")
    file = _resolve_file(path, name, root, size, download)
    # A given file is what it is named: a preset's data.name must not relabel another set.
    known = MEDMNIST_INFO.get((file.stem.split("_")[0] if path else name or file.stem).lower())
    try:
        archive = np.load(file)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read MedMNIST file {file}: {err}") from err
    with archive:
        missing = [f"{s}_{k}" for s in SPLIT_NAMES for k in ("images", "labels") if f"{s}_{k}" not in archive]
        if missing:
            raise ValueError(
                f"{file} lacks {', '.join(missing)}; a MedMNIST file holds train/val/test _images and "
                f"_labels (found: {', '.join(archive.files) or 'nothing'})"
            )
        arrays = {k: archive[k] for k in archive.files}
    if label_type is None:
        label_type = known[0] if known is not None else infer_label_type(arrays["train_labels"])
    if label_type not in LABEL_TYPES:
        raise ValueError(f"data.label_type must be one of {LABEL_TYPES}, got {label_type!r}")
    if class_names is None:
        if known is not None and known[0] == label_type:
            class_names = list(known[1])
        else:
            train_labels = arrays["train_labels"]
            top = max(int(arrays[f"{split}_labels"].max(initial=0)) for split in SPLIT_NAMES)
            k = train_labels.shape[1] if label_type == "multilabel" else top + 1
            class_names = [str(i) for i in range(max(k, 2))]
    num_classes = len(class_names)
    parts = {}  # split -> (images, labels, ids)
    for split in SPLIT_NAMES:
        images = arrays[f"{split}_images"]
        if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise ValueError(
                f"{file}: '{split}_images' is {images.dtype} {images.shape}; expected uint8 [N, H, W] or [N, H, W, 3]"
            )
        labels = _check_labels(arrays[f"{split}_labels"], label_type, num_classes, file, f"{split}_labels")
        if len(labels) != len(images):
            raise ValueError(f"{file}: {len(images)} {split}_images but {len(labels)} {split}_labels")
        parts[split] = images, labels, [f"{file.stem}/{split}/{i}" for i in range(len(images))]
    if cv_folds is not None:
        parts.update(_cv_split(parts["train"], parts["val"], cv_folds, cv_fold, cv_seed, file.stem))
    datasets = [MedMNISTDataset(*parts[split][:2], label_type, train_transform if split == "train" else eval_transform,
                                ids=parts[split][2]) for split in SPLIT_NAMES]
    return Splits(*datasets, class_names=class_names, label_type=label_type)


def _cv_split(train: tuple, val: tuple, folds: int, fold: int, seed: int, stem: str) -> dict[str, tuple]:
    """{"train", "val"} of fold ``fold`` as (images, labels, ids): train + val pooled (ids
    ``<stem>/trainval/<i>``, train's images first), fold ``fold`` of ``stratified_folds`` as
    val, the rest as train."""
    images, labels = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    in_val = stratified_folds(labels, folds, seed) == fold
    out = {}
    for split, keep in (("train", ~in_val), ("val", in_val)):
        idx = np.flatnonzero(keep)
        out[split] = images[idx], labels[idx], [f"{stem}/trainval/{i}" for i in idx]
    return out


medmnist_splits.describe = describe_medmnist  # read by the DataModule before the splits are built
