"""The procedural medical scans: determinism, multi-label findings, labels without rendering."""

import numpy as np
import pytest
import torch

from mmtrans.data.scans import FINDINGS, MedicalScansDataset, medical_scans_splits


def test_deterministic_and_item_format():
    a, b = MedicalScansDataset(6, seed=4), MedicalScansDataset(6, seed=4)
    for i in range(6):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    item = a[2]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.float32 and item["label"].shape == (len(FINDINGS),)
    assert item["id"] == "scans/4/2"
    assert not torch.equal(a[0]["image"], MedicalScansDataset(6, seed=5)[0]["image"])


def test_labels_match_items_and_prevalence():
    ds = MedicalScansDataset(400, img_size=24, seed=1, prevalence=0.3)
    labels = ds.labels
    assert labels.shape == (400, len(FINDINGS))
    for i in (0, 17, 399):
        assert np.array_equal(labels[i], ds[i]["label"].numpy())
    assert np.all(np.abs(labels.mean(0) - 0.3) < 0.08)
    # Zero, one and several findings all occur.
    per_scan = labels.sum(1)
    assert (per_scan == 0).any() and (per_scan == 1).any() and (per_scan >= 2).any()


def test_findings_change_the_image():
    # Same scan with and without a finding differs only around it: render sample i with
    # prevalence ~1 vs ~0 is a different draw, so compare mean brightness statistics instead.
    ds = MedicalScansDataset(300, seed=2)
    labels = ds.labels
    bright = np.array([ds.render_array(i)[0].max() for i in range(300)])
    has_bright = labels[:, FINDINGS.index("calcification")] == 1
    assert bright[has_bright].mean() > bright[~has_bright].mean() + 20


def test_subset_of_findings_and_splits():
    splits = medical_scans_splits(num_train=10, num_val=3, num_test=4, findings=["nodule", "cyst"])
    assert splits.label_type == "multilabel" and splits.class_names == ["nodule", "cyst"]
    assert splits.train[0]["label"].shape == (2,)
    full = MedicalScansDataset(10)
    assert np.array_equal(splits.train.labels, full.labels[:, [0, 2]])
    assert not torch.equal(splits.val[0]["image"], splits.train[0]["image"])
    with pytest.raises(ValueError, match="findings must be"):
        MedicalScansDataset(2, findings=["tumour"])
    with pytest.raises(ValueError, match="prevalence"):
        MedicalScansDataset(2, prevalence=1.0)
