"""Medical image classification from a CSV of image paths and labels (DICOM, PNG, TIFF, JPEG).

    path,label,patient_id,split
    scans/p001_a.dcm,pneumonia,p001,train
    scans/p001_b.dcm,pneumonia,p001,train
    scans/p002_a.dcm,normal,p002,val

* `path_column`: the image, relative to `root` (default: the CSV's folder) or absolute.
* `label_columns`: one column of class names or integers (binary / multiclass / ordinal
  grades 0..K-1), or several 0/1 columns, one per finding (multilabel).
* `patient_column` (optional): all rows of a patient go to one split, so that no patient is
  both trained on and evaluated on (images of one patient look alike; a row-level split
  would overstate every metric).
* `split_column` (optional): train / val / test per row, used as given.

The whole CSV is checked when the splits are built, before any training: missing columns,
empty cells, image files that do not exist and labels that do not fit the label type are
reported with the CSV path, the spreadsheet row number (header = row 1) and the column.
"""

from __future__ import annotations

import copy
import csv
import os
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mmtrans.data.io import check_window
from mmtrans.data.medical_io import load_medical_image
from mmtrans.data.splits import LABEL_TYPES, Splits, check_fractions, group_split, stratified_split

Transform = Callable[[Image.Image], torch.Tensor]
_MODES = {1: "L", 3: "RGB"}
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_FLAGS = {"1": 1.0, "1.0": 1.0, "true": 1.0, "yes": 1.0, "0": 0.0, "0.0": 0.0, "false": 0.0, "no": 0.0}


class MedicalCsvDataset(Dataset):
    """Rows of a CSV -> `{"image": transform(PIL), "label": Tensor, "id": image path}`.

    `label` is an int64 scalar (binary / multiclass / ordinal) or a float32 0/1 vector of
    length K (multilabel); `labels` holds them all ([N] int64 or [N, K] float32). `id` is the
    image's path, so a prediction (or a bad sample) can be traced to its file. Without
    a transform, `image` is the PIL image ("L" or "RGB" per `mode`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        class_names: Sequence[str],
        label_type: str,
        transform: Transform | None = None,
        patients: Sequence[str] | None = None,
        mode: str = "L",
        window: Sequence[float] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = labels
        self.class_names = list(class_names)
        self.label_type = label_type
        self.transform = transform
        self.patients = list(patients) if patients is not None else None
        self.mode = mode
        self.window = window

    def __len__(self) -> int:
        return len(self.paths)

    def image_files(self) -> list[str]:
        return list(dict.fromkeys(self.paths))

    def read_image(self, path: str) -> Image.Image:
        return load_medical_image(path, self.mode, self.window)

    def without_files(self, paths: Collection[str]) -> MedicalCsvDataset:
        """A copy without the rows of `paths` (files found unreadable up front)."""
        keep = [i for i, p in enumerate(self.paths) if p not in paths]
        kept = copy.copy(self)
        kept.paths = [self.paths[i] for i in keep]
        kept.labels = self.labels[keep]
        if self.patients is not None:
            kept.patients = [self.patients[i] for i in keep]
        return kept

    def __getitem__(self, index: int) -> dict:
        image = self.read_image(self.paths[index])
        return {
            "image": self.transform(image) if self.transform is not None else image,
            "label": torch.tensor(self.labels[index]),  # copies: workers never share the array
            "id": self.paths[index],
        }


def medical_csv_splits(
    annotations: str | os.PathLike,
    root: str | os.PathLike | None = None,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    path_column: str = "path",
    label_columns: str | Sequence[str] = "label",
    patient_column: str | None = None,
    split_column: str | None = None,
    label_type: str | None = None,
    class_names: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    window: Sequence[float] | None = None,
    in_chans: int = 1,
) -> Splits:
    """Splits of the CSV `annotations` (see the module docstring for its layout).

    Labels: one column gives class names (sorted unique values unless `class_names` is given;
    integers sort numerically) and `label_type` "binary" for 2 classes, "multiclass" for more.
    `label_type="ordinal"` reads integers as grades 0..K-1 (K = len(class_names), or the
    largest grade + 1), or names in the order of `class_names`. Several columns give
    "multilabel": each cell 0/1 (or true/false, yes/no), class names = the column names.

    Splits: `split_column` wins; else with `patient_column` a seeded split of the patients
    (fractions count patients); else a stratified split of the rows (a seeded random one for
    multilabel). test_fraction=0 (or no "test" rows) gives `Splits.test` None. `window`
    (center, width) and `in_chans` (1: "L", 3: "RGB") are passed on to `load_medical_image`.
    """
    if label_type is not None and label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {LABEL_TYPES} or None, got {label_type!r}")
    if in_chans not in _MODES:
        raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
    label_cols = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    if not label_cols:
        raise ValueError("label_columns is empty: name the column (or columns) that hold the labels")
    multilabel = len(label_cols) > 1 or label_type == "multilabel"
    if multilabel and label_type not in (None, "multilabel"):
        raise ValueError(f"{len(label_cols)} label columns {label_cols} mean multilabel, not {label_type!r}")
    if split_column is None:
        check_fractions(val_fraction, test_fraction)
    window = check_window(window)

    source = Path(annotations).expanduser()
    base = Path(root).expanduser() if root is not None else source.parent
    optional = [c for c in (patient_column, split_column) if c is not None]
    table = _read_table(source, [path_column, *label_cols, *optional])
    paths = [_image_path(v, base, source, i, path_column) for i, v in enumerate(table[path_column])]
    if multilabel:
        labels, class_names = _multilabels(table, label_cols, class_names, source)
        label_type = "multilabel"
    else:
        column = label_cols[0]
        labels, class_names, label_type = _single_labels(
            table[column], column, class_names, label_type, source
        )
    patients = table[patient_column] if patient_column else None

    if split_column is not None:
        train, val, test = _column_split(table[split_column], split_column, patients, source)
    elif patients is not None:
        train, val, test = group_split(patients, val_fraction, test_fraction, seed)
    elif multilabel:
        train, val, test = group_split(range(len(paths)), val_fraction, test_fraction, seed)
    else:
        train, val, test = stratified_split(labels, val_fraction, test_fraction, seed)

    def dataset(index: list[int], transform: Transform | None) -> MedicalCsvDataset:
        return MedicalCsvDataset(
            [paths[i] for i in index],
            labels[index],
            class_names,
            label_type,
            transform,
            [patients[i] for i in index] if patients is not None else None,
            _MODES[in_chans],
            window,
        )

    return Splits(
        train=dataset(train, train_transform),
        val=dataset(val, eval_transform),
        test=dataset(test, eval_transform) if test else None,
        class_names=list(class_names),
        label_type=label_type,
    )


def _where(source: Path, i: int, column: str) -> str:
    # Row numbers as a spreadsheet shows them: the header is row 1, the first data row row 2.
    return f"{source} row {i + 2}, column {column!r}"


def _read_table(source: Path, columns: list[str]) -> dict[str, list[str]]:
    """The stripped, non-empty cells of `columns`, column by column."""
    if not source.is_file():
        raise FileNotFoundError(f"annotations CSV {source} does not exist")
    # utf-8-sig: Excel writes a byte-order mark that would otherwise stick to the first column name.
    with open(source, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        if not reader.fieldnames:
            raise ValueError(
                f"{source} is empty: expected a header row with columns {columns}, then one row per image"
            )
        header = [name.strip() for name in reader.fieldnames]
        reader.fieldnames = header
        missing = [c for c in dict.fromkeys(columns) if c not in header]
        if missing:
            raise ValueError(
                f"{source} has no column {', '.join(map(repr, missing))} (columns present: {', '.join(header)})"
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"{source} has a header but no rows: expected one row per image")
    table: dict[str, list[str]] = {c: [] for c in columns}
    for i, row in enumerate(rows):
        if None in row:  # more cells than the header, e.g. an unquoted comma in a path
            raise ValueError(
                f"{source} row {i + 2} has more cells than the header ({len(header)}): quote values with commas"
            )
        for column in table:
            value = (row[column] or "").strip()  # None: the row has fewer cells than the header
            if not value:
                raise ValueError(f"{_where(source, i, column)}: the cell is empty")
            table[column].append(value)
    return table


def _image_path(value: str, base: Path, source: Path, i: int, column: str) -> str:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise FileNotFoundError(
            f"{_where(source, i, column)}: image {path} does not exist (relative paths are read from {base})"
        )
    return str(path)


def _as_int(value: str) -> int | None:
    """An integer cell ("2", or "2.0" as pandas writes integer columns with gaps), else None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _single_labels(
    values: list[str], column: str, class_names: Sequence[str] | None, label_type: str | None, source: Path
) -> tuple[np.ndarray, list[str], str]:
    ints = [_as_int(v) for v in values]
    all_ints = None not in ints
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        index = {name: k for k, name in enumerate(class_names)}
        if all(v in index for v in values):
            labels = [index[v] for v in values]
        elif all_ints:  # integers index class_names, e.g. grades 0..K-1 with a name per grade
            labels = ints
        else:
            i = next(i for i, v in enumerate(values) if v not in index)
            raise ValueError(
                f"{_where(source, i, column)}: label {values[i]!r} is not one of class_names {class_names}"
            )
    elif label_type == "ordinal":
        if not all_ints:
            i = ints.index(None)
            raise ValueError(
                f"{_where(source, i, column)}: ordinal label {values[i]!r} is not an integer grade; "
                f"give integer grades 0..K-1, or class_names in grade order"
            )
        labels = ints
        class_names = [str(k) for k in range(max(max(ints), 0) + 1)]
    else:
        unique = sorted(set(ints)) if all_ints else sorted(set(values))
        class_names = [str(v) for v in unique]
        position = {v: k for k, v in enumerate(unique)}
        labels = [position[v] for v in (ints if all_ints else values)]
    k = len(class_names)
    for i, label in enumerate(labels):
        if not 0 <= label < k:
            raise ValueError(
                f"{_where(source, i, column)}: label {values[i]} is outside 0..{k - 1} "
                f"(expected a class index or one of {class_names})"
            )
    if k < 2:
        raise ValueError(
            f"{source}: column {column!r} has one class {class_names}; a classifier needs two or more"
        )
    label_type = label_type or ("binary" if k == 2 else "multiclass")
    if label_type == "binary" and k != 2:
        raise ValueError(
            f"{source}: label_type 'binary' needs 2 classes, column {column!r} has {k}: {class_names}"
        )
    return np.asarray(labels, dtype=np.int64), class_names, label_type


def _multilabels(
    table: dict[str, list[str]], columns: list[str], class_names: Sequence[str] | None, source: Path
) -> tuple[np.ndarray, list[str]]:
    if class_names is not None and len(class_names) != len(columns):
        raise ValueError(
            f"class_names {list(class_names)} must name the {len(columns)} label columns {columns}"
        )
    labels = np.zeros((len(table[columns[0]]), len(columns)), dtype=np.float32)
    for k, column in enumerate(columns):
        for i, value in enumerate(table[column]):
            if value.lower() not in _FLAGS:
                raise ValueError(f"{_where(source, i, column)}: {value!r} is not 0/1 (or true/false, yes/no)")
            labels[i, k] = _FLAGS[value.lower()]
    return labels, [str(c) for c in (class_names if class_names is not None else columns)]


def _column_split(
    values: list[str], column: str, patients: list[str] | None, source: Path
) -> tuple[list[int], list[int], list[int]]:
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, value in enumerate(values):
        if value.lower() not in _SPLIT_NAMES:
            raise ValueError(f"{_where(source, i, column)}: split {value!r} is not train, val or test")
        splits[_SPLIT_NAMES[value.lower()]].append(i)
    for name in ("train", "val"):
        if not splits[name]:
            raise ValueError(f"{source}: column {column!r} has no {name!r} rows")
    if patients is not None:
        # The split is the user's to make; a patient in two splits is worth a warning, not a stop.
        seen: dict[str, set[str]] = {}
        for name, index in splits.items():
            for i in index:
                seen.setdefault(patients[i], set()).add(name)
        leaked = sorted(patient for patient, names in seen.items() if len(names) > 1)
        if leaked:
            warnings.warn(
                f"{source}: {len(leaked)} patient(s) in more than one split of column {column!r} "
                f"(e.g. {leaked[0]!r}); evaluating on patients seen in training overstates the metrics",
                stacklevel=3,
            )
    return splits["train"], splits["val"], splits["test"]
