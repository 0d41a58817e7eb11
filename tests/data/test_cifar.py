"""cifar_splits: clear errors without files or network, and the wrapping on fake batches."""

import pickle
import urllib.error

import numpy as np
import pytest
import torch
from torchvision import datasets

from mmtrans.data import cifar_splits


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        cifar_splits(tmp_path)
    message = str(info.value)
    assert (
        str(tmp_path / "cifar-10-batches-py") in message
        and "download=True" in message
        and "data.download=true" in message
    )
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        cifar_splits(tmp_path, name="cifar100")


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="cifar10, cifar100"):
        cifar_splits(tmp_path, name="cifar11")


def test_download_without_network_is_explained(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    with pytest.raises(RuntimeError, match=r"could not download cifar10 .*cifar-10-python.tar.gz"):
        cifar_splits(tmp_path, download=True)


def write_fake_cifar10(root, n_per_batch=40, n_test=30):
    """The official pickle layout, tiny: 5 train batches, a test batch and the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_corrupted_files(tmp_path):
    write_fake_cifar10(tmp_path)  # real md5 sums do not match the fake files
    with pytest.raises(ValueError, match="corrupted"):
        cifar_splits(tmp_path)


def test_splits_from_fake_files(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path)
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = cifar_splits(tmp_path, val_fraction=0.1, seed=0)
    assert splits.class_names == [f"c{i}" for i in range(10)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 30)
    # Stratified: 2 of each class's 20 train images go to val.
    assert sorted(splits.val[i]["label"] for i in range(20)) == sorted(list(range(10)) * 2)
    train_ids = {splits.train[i]["id"] for i in range(len(splits.train))}
    val_ids = {splits.val[i]["id"] for i in range(len(splits.val))}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 200
    item = splits.test[0]
    assert item["id"] == "cifar10/test/0" and item["label"] == 0
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    again = cifar_splits(tmp_path, val_fraction=0.1, seed=0)
    assert [again.val[i]["id"] for i in range(20)] == [splits.val[i]["id"] for i in range(20)]
