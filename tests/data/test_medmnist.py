"""MedMNIST .npz files: label types per set, shapes, offline errors naming file and key."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mmtrans.data import build_transform
from mmtrans.data.medmnist import MEDMNIST_INFO, medmnist_file_name, medmnist_splits

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_npz(path: Path, labels_of: dict[str, np.ndarray], rgb: bool = False, size: int = 28, **extra) -> Path:
    arrays = {}
    rng = np.random.default_rng(0)
    for split, labels in labels_of.items():
        shape = (len(labels), size, size, 3) if rgb else (len(labels), size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def splits_of(make) -> dict[str, np.ndarray]:
    return {s: make(n) for s, n in (("train", 12), ("val", 4), ("test", 6))}


@pytest.mark.parametrize(
    ("name", "make", "label_type", "label_shape", "rgb"),
    [
        ("breastmnist", lambda n: np.arange(n).reshape(n, 1) % 2, "binary", (), False),
        ("breastmnist", lambda n: np.arange(n) % 2, "binary", (), False),  # flat (N,) labels, re-saved copies
        ("pathmnist", lambda n: (np.arange(n) % 9).reshape(n, 1), "multiclass", (), True),
        ("retinamnist", lambda n: (np.arange(n) % 5).reshape(n, 1), "ordinal", (), True),
        ("chestmnist", lambda n: (np.arange(n * 14).reshape(n, 14) % 3 == 0).astype(np.uint8), "multilabel", (14,), False),
    ],
)
def test_label_type_from_name_and_items(tmp_path, name, make, label_type, label_shape, rgb):
    file = write_npz(tmp_path / medmnist_file_name(name), splits_of(make), rgb=rgb)
    splits = medmnist_splits(name=name, root=str(tmp_path))
    assert splits.label_type == label_type == MEDMNIST_INFO[name][0]
    assert splits.class_names == MEDMNIST_INFO[name][1]
    assert [len(d) for d in (splits.train, splits.val, splits.test)] == [12, 4, 6]
    item = splits.train[3]
    assert item["image"].mode == ("RGB" if rgb else "L") and item["image"].size == (28, 28)
    assert item["label"].shape == label_shape
    expected = make(12)[3].reshape(-1) if label_type == "multilabel" else make(12).reshape(-1)[3]
    assert np.array_equal(item["label"].numpy().reshape(-1), np.asarray(expected).reshape(-1))
    assert splits.train.labels.shape == (12, *label_shape)
    # The same file by path, with a transform: tensors of the right channel count.
    tf = build_transform(img_size=28, train=False, mean=[0.5], std=[0.5], in_chans=1, crop_pct=1.0)
    by_path = medmnist_splits(tf, tf, path=str(file))
    assert by_path.train[0]["image"].shape == (1, 28, 28)


def test_label_type_override_and_unknown_name(tmp_path):
    file = write_npz(tmp_path / "mine.npz", splits_of(lambda n: (np.arange(n) % 3).reshape(n, 1)))
    inferred = medmnist_splits(path=str(file))  # a name MedMNIST does not know: from the labels
    assert inferred.label_type == "multiclass" and inferred.class_names == ["0", "1", "2"]
    two = write_npz(tmp_path / "two.npz", splits_of(lambda n: np.arange(n) % 2))
    assert medmnist_splits(path=str(two)).label_type == "binary"
    with pytest.raises(ValueError, match="data.label_type must be one of"):
        medmnist_splits(path=str(file), label_type="grades")
    splits = medmnist_splits(path=str(file), label_type="ordinal")
    assert splits.label_type == "ordinal" and splits.class_names == ["0", "1", "2"]
    # data.path wins over data.name (a preset's BreastMNIST must not relabel another file).
    assert medmnist_splits(path=str(file), name="breastmnist").num_classes == 3
    # A known set read as another type (e.g. retina grades as plain classes).
    retina = write_npz(tmp_path / "retinamnist.npz", splits_of(lambda n: (np.arange(n) % 5).reshape(n, 1)))
    assert medmnist_splits(path=str(retina), label_type="multiclass").label_type == "multiclass"


def test_missing_key_names_file_and_key(tmp_path):
    labels = splits_of(lambda n: np.arange(n) % 2)
    file = tmp_path / "breastmnist.npz"
    write_npz(file, labels)
    data = dict(np.load(file))
    del data["val_labels"]
    np.savez(file, **data)
    with pytest.raises(ValueError, match=r"breastmnist.npz lacks val_labels"):
        medmnist_splits(path=str(file))


def test_wrong_label_shape_for_type(tmp_path):
    # chestmnist needs [N, 14]; flat labels are a clear error naming file, key and shape.
    file = write_npz(tmp_path / "chestmnist.npz", splits_of(lambda n: np.arange(n) % 2))
    with pytest.raises(ValueError, match=r"chestmnist.npz: 'train_labels' has shape \(12,\).*\[N, 14\]"):
        medmnist_splits(path=str(file))
    # Several columns for a binary set.
    file = write_npz(tmp_path / "breastmnist.npz", splits_of(lambda n: np.zeros((n, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"'train_labels' has shape \(12, 3\).*one label per image"):
        medmnist_splits(path=str(file))
    # Labels outside the class range.
    file = write_npz(tmp_path / "pneumoniamnist.npz", splits_of(lambda n: np.full((n, 1), 4)))
    with pytest.raises(ValueError, match=r"outside 0..1"):
        medmnist_splits(path=str(file))


def test_offline_names_the_file_to_place(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pathmnist_64.npz.*data.download=true"):
        medmnist_splits(name="pathmnist", root=str(tmp_path), size=64)
    with pytest.raises(FileNotFoundError, match=r"nothere.npz \(data.path\)"):
        medmnist_splits(path=str(tmp_path / "nothere.npz"))
    with pytest.raises(ValueError, match="size must be one of"):
        medmnist_file_name("pathmnist", 32)
    not_npz = tmp_path / "breastmnist.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match="cannot read MedMNIST file"):
        medmnist_splits(path=str(not_npz))


@pytest.mark.skipif(not (SHARED / "breastmnist").is_dir(), reason="../shared/data/breastmnist not present")
def test_real_breastmnist_file():
    splits = medmnist_splits(path=str(SHARED / "breastmnist" / "breastmnist.npz"))
    assert splits.label_type == "binary"
    assert [len(d) for d in (splits.train, splits.val, splits.test)] == [546, 78, 156]
    assert np.bincount(splits.train.labels).tolist() == [147, 399]
    assert isinstance(splits.test[0]["label"], torch.Tensor)


# -- k-fold cross-validation on train + val ------------------------------------------------------
def test_stratified_folds_deal_each_class_evenly():
    from mmtrans.data import stratified_folds

    labels = np.array([0] * 10 + [1] * 7 + [2] * 2)
    folds = stratified_folds(labels, 3, seed=0)
    assert np.bincount(folds).tolist() in ([7, 6, 6], [6, 7, 6], [6, 6, 7])  # sizes differ by at most one
    for cls in range(3):  # each class spread: per-fold counts differ by at most one
        counts = np.bincount(folds[labels == cls], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, 3, seed=0))  # seeded
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=1))
    multi = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 1], [0, 1]])  # strata: distinct label rows
    assert sorted(stratified_folds(multi, 2)[[0, 2, 5]].tolist()) in ([0, 0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="folds >= 2"):
        stratified_folds(labels, 1)
    with pytest.raises(ValueError, match="19 samples cannot fill 20 folds"):
        stratified_folds(labels, 20)


@pytest.mark.parametrize("make", [lambda n: np.arange(n).reshape(n, 1) % 2,
                                  lambda n: (np.arange(n * 3).reshape(n, 3) % 2).astype(np.uint8)])
def test_cv_folds_cover_train_and_val_once_and_keep_test(tmp_path, make):
    name = "breastmnist" if make(2).shape[1] == 1 else "chestlike"
    file = str(write_npz(tmp_path / f"{name}.npz", splits_of(make)))
    official = medmnist_splits(path=file)
    pooled = np.concatenate([official.train.images, official.val.images])
    seen = []
    for fold in range(4):
        s = medmnist_splits(path=file, cv_folds=4, cv_fold=fold, eval_transform=build_transform(28, False, (0.5,), (0.5,), in_chans=1))
        assert len(s.train) + len(s.val) == 16 and len(s.val) == 4
        ids = [s.val[i]["id"] for i in range(len(s.val))]
        assert not set(ids) & {s.train[i]["id"] for i in range(len(s.train))}
        rows = [int(i.rsplit("/", 1)[1]) for i in ids]
        assert all(i.startswith(f"{name}/trainval/") for i in ids)
        assert np.array_equal(s.val.images, pooled[rows])  # ids name the pooled image
        assert np.array_equal(s.test.images, official.test.images) and s.test[0]["id"] == f"{name}/test/0"
        assert s.val[0]["image"].shape == (1, 28, 28)  # the eval transform reached the fold's val
        seen += rows
    assert sorted(seen) == list(range(16))  # every train/val image is val exactly once
    with pytest.raises(ValueError, match=r"data.cv_fold must be one of 0..3 \(data.cv_folds=4\), got 4"):
        medmnist_splits(path=file, cv_folds=4, cv_fold=4)
    with pytest.raises(ValueError, match="data.cv_folds must be null or an integer >= 2, got 1"):
        medmnist_splits(path=file, cv_folds=1)
