"""medical_csv_splits: label types, patient / column / stratified splits, up-front validation."""

import csv
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from PIL import Image

from mmtrans.data import MedicalCsvDataset, build_transform, medical_csv_splits
from mmtrans.data.medical_csv import group_split


def write_csv(path, header, rows, images=True):
    """Write the CSV and (with `images`) a tiny grey PNG for each row's first cell."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    if images:
        for row in rows:
            image = path.parent / str(row[0])
            if row[0] and not image.exists():
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (4, 4), 100).save(image)
    return path


def all_rows(splits):
    parts = [splits.train, splits.val] + ([splits.test] if splits.test is not None else [])
    return [p for part in parts for p in part.paths]


def test_binary_names_inferred_and_items(tmp_path):
    rows = [(f"img/{i}.png", "pneumonia" if i % 3 else "normal") for i in range(30)]
    splits = medical_csv_splits(write_csv(tmp_path / "a.csv", ["path", "label"], rows), seed=1)
    assert splits.class_names == ["normal", "pneumonia"] and splits.label_type == "binary"
    assert sorted(all_rows(splits)) == sorted(str(tmp_path / r[0]) for r in rows)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 3, 6)  # stratified 0.1 / 0.2
    item = splits.val[0]
    assert isinstance(item["image"], Image.Image) and item["image"].mode == "L" and item["id"] == splits.val.paths[0]
    assert item["label"].dtype == torch.int64 and item["label"].shape == ()
    assert splits.train.labels.dtype == np.int64 and splits.train.patients is None
    names = {str(tmp_path / p): label for p, label in rows}
    for part in (splits.train, splits.val, splits.test):
        assert [splits.class_names[k] for k in part.labels] == [names[p] for p in part.paths]
    assert splits.class_names[int(item["label"])] == names[splits.val.paths[0]]


def test_integer_classes_sort_numerically_and_overrides(tmp_path):
    rows = [(f"{i}.png", v) for i, v in enumerate([2, 10, 1] * 4)]
    path = write_csv(tmp_path / "m.csv", ["path", "label"], rows)
    splits = medical_csv_splits(path, test_fraction=0.0)
    assert splits.class_names == ["1", "2", "10"] and splits.label_type == "multiclass"
    assert splits.test is None
    # Given class names (in their order) and a given label type win over inference.
    splits = medical_csv_splits(path, class_names=["10", "2", "1"], label_type="ordinal", val_fraction=0.3)
    assert splits.class_names == ["10", "2", "1"] and splits.label_type == "ordinal"
    names = {str(tmp_path / p): str(v) for p, v in rows}
    for part in (splits.train, splits.val, splits.test):
        assert [splits.class_names[k] for k in part.labels] == [names[p] for p in part.paths]
    two = write_csv(tmp_path / "b.csv", ["path", "y"], [(f"{i}.png", i % 2) for i in range(10)])
    assert medical_csv_splits(two, label_columns="y", label_type="multiclass").label_type == "multiclass"


def test_ordinal_grades_and_named_grades(tmp_path):
    grades = [0, 1, 2, 4, 1, 0, 2, 4, 0, 1]  # no grade 3 in this CSV: K is still max + 1
    path = write_csv(tmp_path / "o.csv", ["path", "grade"], [(f"{i}.png", g) for i, g in enumerate(grades)])
    splits = medical_csv_splits(
        path, label_columns="grade", label_type="ordinal", val_fraction=0.0, test_fraction=0.0
    )
    assert splits.class_names == ["0", "1", "2", "3", "4"] and splits.label_type == "ordinal"
    assert splits.train.labels.tolist() == grades
    named = write_csv(
        tmp_path / "n.csv",
        ["path", "grade"],
        [(f"{i}.png", g) for i, g in enumerate(["mild", "none", "severe"] * 3)],
    )
    splits = medical_csv_splits(
        named,
        label_columns="grade",
        label_type="ordinal",
        class_names=["none", "mild", "severe"],
        val_fraction=0.0,
        test_fraction=0.0,
    )
    assert splits.train.labels.tolist() == [1, 0, 2] * 3


def test_multilabel_columns(tmp_path):
    flags = [("1", "0", "true"), ("0", "0", "no"), ("yes", "1", "False")] * 5
    rows = [(f"{i}.png", *f) for i, f in enumerate(flags)]
    path = write_csv(tmp_path / "ml.csv", ["path", "effusion", "nodule", "mass"], rows)
    splits = medical_csv_splits(path, label_columns=["effusion", "nodule", "mass"], seed=3)
    assert splits.label_type == "multilabel" and splits.class_names == ["effusion", "nodule", "mass"]
    assert sorted(all_rows(splits)) == sorted(str(tmp_path / r[0]) for r in rows)
    assert (len(splits.val), len(splits.test)) == (2, 3)  # a seeded random split of 15 rows
    row = int(splits.train.paths[0].rsplit("/", 1)[1].split(".")[0])
    label = splits.train[0]["label"]
    assert label.dtype == torch.float32 and label.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0]][row % 3]
    again = medical_csv_splits(path, label_columns=["effusion", "nodule", "mass"], seed=3)
    assert again.val.paths == splits.val.paths


def test_patient_split_has_no_leakage(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        (f"p{p:02d}_{k}.png", "sick" if p % 2 else "well", f"P{p:02d}")
        for p in range(40)
        for k in range(rng.integers(1, 5))
    ]
    rows = [rows[i] for i in rng.permutation(len(rows))]  # rows of a patient scattered through the file
    path = write_csv(tmp_path / "p.csv", ["path", "label", "patient_id"], rows)
    splits = medical_csv_splits(
        path, patient_column="patient_id", val_fraction=0.1, test_fraction=0.2, seed=5
    )
    patients = [set(part.patients) for part in (splits.train, splits.val, splits.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert [len(p) for p in patients] == [28, 4, 8]  # fractions count patients
    assert sorted(all_rows(splits)) == sorted(str(tmp_path / r[0]) for r in rows)  # every row exactly once
    for part in (splits.train, splits.val, splits.test):  # paths, labels and patients stay aligned
        assert all(p.rsplit("/", 1)[1].startswith(pid.lower()) for p, pid in zip(part.paths, part.patients))
        labels = [splits.class_names[k] for k in part.labels]
        assert labels == ["sick" if int(pid[1:]) % 2 else "well" for pid in part.patients]
    other = medical_csv_splits(path, patient_column="patient_id", seed=6)
    assert set(other.test.patients) != patients[2]


def test_group_split_is_independent_of_row_order():
    groups = ["a", "b", "a", "c", "d", "b", "e", "f", "g", "h"]
    train, val, test = group_split(groups, 0.2, 0.2, seed=0)
    reordered = groups[::-1]
    _, val2, test2 = group_split(reordered, 0.2, 0.2, seed=0)
    assert {groups[i] for i in val} == {reordered[i] for i in val2}
    assert {groups[i] for i in test} == {reordered[i] for i in test2}
    assert sorted(train + val + test) == list(range(len(groups)))


def test_split_column_is_honoured(tmp_path):
    split_of = ["train", "Train", "val", "Validation", "test", "train", "train", "val"]
    rows = [(f"{i}.png", i % 2, f"P{i // 2}", s) for i, s in enumerate(split_of)]
    path = write_csv(tmp_path / "s.csv", ["path", "label", "pid", "split"], rows)
    with pytest.warns(UserWarning, match="patient.*more than one split.*'P"):
        splits = medical_csv_splits(path, split_column="split", patient_column="pid")
    index = {str(tmp_path / r[0]): r[3].lower()[:3] for r in rows}
    assert {index[p] for p in splits.train.paths} == {"tra"} and len(splits.train) == 4
    assert {index[p] for p in splits.val.paths} == {"val"} and len(splits.val) == 3
    assert splits.test.paths == [str(tmp_path / "4.png")]
    no_test = write_csv(
        tmp_path / "t.csv",
        ["path", "label", "split"],
        [(f"{i}.png", i % 2, "train" if i < 4 else "val") for i in range(6)],
    )
    assert medical_csv_splits(no_test, split_column="split").test is None


def test_root_and_absolute_paths(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (4, 4)).save(tmp_path / "images" / name)
    rows = [("a.png", 0), (str(tmp_path / "images" / "b.png"), 1), ("a.png", 1), ("b.png", 0)]
    path = write_csv(tmp_path / "labels.csv", ["path", "label"], rows, images=False)
    splits = medical_csv_splits(path, root=tmp_path / "images", val_fraction=0.0, test_fraction=0.0)
    assert len(splits.train) == 4 and splits.train[1]["image"].size == (4, 4)


# Validation: every message names the CSV, and the row and column where there is one.
HEADER = ["path", "label"]
GOOD = [("a.png", "x"), ("b.png", "y")]


@pytest.mark.parametrize(
    "header, rows, kwargs, error, match",
    [
        (
            ["file", "diagnosis"],
            GOOD,
            {},
            ValueError,
            r"has no column 'path', 'label' \(columns present: file, diagnosis\)",
        ),
        (HEADER, [("a.png", "x"), ("", "y")], {}, ValueError, r"row 3, column 'path': the cell is empty"),
        (
            HEADER,
            [("a.png", "x"), ("gone.png", "y")],
            {},
            FileNotFoundError,
            r"row 3, column 'path': image .*gone.png does not exist",
        ),
        (
            HEADER,
            [("a.png", "x"), ("b.png", "")],
            {},
            ValueError,
            r"row 3, column 'label': the cell is empty",
        ),
        (
            ["path", "a", "b"],
            [("a.png", "1", "0"), ("b.png", "0", "2")],
            {"label_columns": ["a", "b"]},
            ValueError,
            r"row 3, column 'b': '2' is not 0/1",
        ),
        (
            HEADER,
            [("a.png", 0), ("b.png", 3)],
            {"label_type": "ordinal", "class_names": ["0", "1", "2"]},
            ValueError,
            r"row 3, column 'label': label 3 is outside 0\.\.2",
        ),
        (
            HEADER,
            [("a.png", 0), ("b.png", -1)],
            {"label_type": "ordinal"},
            ValueError,
            r"row 3, column 'label': label -1 is outside",
        ),
        (
            HEADER,
            [("a.png", "x"), ("b.png", "z")],
            {"class_names": ["x", "y"]},
            ValueError,
            r"row 3, column 'label': label 'z' is not one of class_names",
        ),
        (
            HEADER,
            [("a.png", "x"), ("b.png", "y"), ("b.png", "z")],
            {"label_type": "binary"},
            ValueError,
            r"'binary' needs 2 classes, column 'label' has 3",
        ),
        (HEADER, [("a.png", "x"), ("b.png", "x")], {}, ValueError, r"one class \['x'\]"),
        (HEADER, GOOD, {"label_type": "regression"}, ValueError, r"label_type must be one of"),
        (
            ["path", "label", "split"],
            [("a.png", "x", "train"), ("b.png", "y", "holdout")],
            {"split_column": "split"},
            ValueError,
            r"row 3, column 'split': split 'holdout'",
        ),
        (
            ["path", "label", "split"],
            [("a.png", "x", "train"), ("b.png", "y", "test")],
            {"split_column": "split"},
            ValueError,
            r"column 'split' has no 'val' rows",
        ),
        (HEADER, [("a.png", "x", "extra")], {}, ValueError, r"row 2 has more cells than the header"),
        (HEADER, [], {}, ValueError, r"has a header but no rows"),
    ],
)
def test_validation_errors_name_file_row_and_column(tmp_path, header, rows, kwargs, error, match):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    if rows and rows[-1][0] == "gone.png":
        (tmp_path / "gone.png").unlink()
    with pytest.raises(error, match=match) as info:
        medical_csv_splits(path, **kwargs)
    if kwargs.get("label_type") != "regression":
        assert "bad.csv" in str(info.value)


def test_empty_and_missing_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        medical_csv_splits(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        medical_csv_splits(tmp_path / "nowhere.csv")


@pytest.mark.skipif(find_spec("pydicom") is None, reason="pydicom not installed (extra 'medical')")
def test_dicom_csv_end_to_end(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file  # CT_small.dcm ships inside the pydicom wheel

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    (tmp_path / "dcm").mkdir()
    rows = []
    for i in range(8):
        ct.PixelData = (ct.pixel_array + 20 * i).astype(ct.pixel_array.dtype).tobytes()
        ct.save_as(tmp_path / "dcm" / f"s{i}.dcm")
        rows.append((f"dcm/s{i}.dcm", "tumour" if i % 2 else "clear", f"P{i // 2}"))
    path = write_csv(tmp_path / "scans.csv", ["path", "label", "patient"], rows, images=False)
    tf = build_transform(img_size=32, train=False, mean=[0.5], std=[0.5], in_chans=1)
    splits = medical_csv_splits(
        path, train_transform=tf, eval_transform=tf, patient_column="patient", window=(40, 400)
    )
    assert isinstance(splits.train, MedicalCsvDataset) and splits.label_type == "binary"
    item = splits.train[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() < item["image"].max() <= 1.0
    batch = torch.utils.data.default_collate([splits.train[i] for i in range(len(splits.train))])
    assert batch["image"].shape == (len(splits.train), 1, 32, 32) and batch["label"].dtype == torch.int64
    assert {len(set(part.patients)) for part in (splits.train, splits.val, splits.test)} == {2, 1}
