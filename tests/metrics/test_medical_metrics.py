"""medical_metrics / bootstrap_ci / format_report against scikit-learn, MedMNIST's evaluator and torchmetrics."""

import ast
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    mean_absolute_error,
    roc_auc_score,
)
from torchmetrics.classification import CalibrationError

import mmtrans.metrics.medical as medical
from mmtrans.data.splits import LABEL_TYPES
from mmtrans.metrics import bootstrap_ci, format_report, medical_metrics
from mmtrans.metrics.medical import _canonical_order

K = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are small; on a shared, busy CPU torch's thread pool costs more than it saves
    (bootstrap_ci of 200 x 200 x 4 took 0.35 s with 2 threads vs 0.01 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(
    label_type: str, n: int, seed: int = 0, ties: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities with some signal about the target; `ties` rounds them to 0.1 (ties, p == 0.5)."""
    g = torch.Generator().manual_seed(seed)
    if label_type in ("binary", "multilabel"):
        shape = (n,) if label_type == "binary" else (n, K)
        target = torch.randint(0, 2, shape, generator=g)
        probs = torch.sigmoid(1.5 * (2 * target - 1) + 1.5 * torch.randn(shape, generator=g))
    else:
        target = torch.randint(0, K, (n,), generator=g)
        logits = 2 * torch.randn(n, K, generator=g) + 2.0 * torch.nn.functional.one_hot(target, K)
        probs = logits.softmax(1)
    return ((probs * 10).round() / 10 if ties else probs), target


def sklearn_reference(probs, target, label_type, threshold=0.5):
    """Every non-ECE key of medical_metrics, computed with scikit-learn."""
    p, y = probs.double().numpy(), target.numpy()
    if label_type == "binary":
        pred = (p > threshold).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        return {
            "auc": roc_auc_score(y, p),
            "acc": accuracy_score(y, pred),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
        }
    if label_type == "multilabel":
        pred = (p > threshold).astype(int)
        columns = [(y[:, k], p[:, k], pred[:, k]) for k in range(K)]
        acc = np.mean([accuracy_score(y[:, k], pred[:, k]) for k in range(K)])
    else:
        pred = p.argmax(1)
        columns = [(y == k, p[:, k], pred == k) for k in range(K)]
        acc = accuracy_score(y, pred)
    ref = {"acc": acc}
    for k, (yk, pk, predk) in enumerate(columns):
        tn, fp, fn, tp = confusion_matrix(yk, predk, labels=[0, 1]).ravel()
        ref |= {
            f"auc_{k}": roc_auc_score(yk, pk),
            f"sensitivity_{k}": tp / (tp + fn),
            f"specificity_{k}": tn / (tn + fp),
        }
    for name in ("auc", "sensitivity", "specificity"):
        ref[name] = np.mean([ref[f"{name}_{k}"] for k in range(K)])
    if label_type == "ordinal":
        ref["mae"] = mean_absolute_error(y, pred)
        ref["qwk"] = cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(K)))
    return ref


# MedMNIST v2's evaluator (medmnist/evaluator.py, getAUC / getACC), copied as the reference.
def getAUC(y_true, y_score, task):
    y_true = y_true.squeeze()
    y_score = y_score.squeeze()
    if task == "multi-label, binary-class":
        auc = 0
        for i in range(y_score.shape[1]):
            label_auc = roc_auc_score(y_true[:, i], y_score[:, i])
            auc += label_auc
        ret = auc / y_score.shape[1]
    elif task == "binary-class":
        if y_score.ndim == 2:
            y_score = y_score[:, -1]
        else:
            assert y_score.ndim == 1
        ret = roc_auc_score(y_true, y_score)
    else:
        auc = 0
        for i in range(y_score.shape[1]):
            y_true_binary = (y_true == i).astype(float)
            y_score_binary = y_score[:, i]
            auc += roc_auc_score(y_true_binary, y_score_binary)
        ret = auc / y_score.shape[1]
    return ret


def getACC(y_true, y_score, task, threshold=0.5):
    y_true = y_true.squeeze()
    y_score = y_score.squeeze()
    if task == "multi-label, binary-class":
        y_pre = y_score > threshold
        acc = 0
        for label in range(y_true.shape[1]):
            label_acc = accuracy_score(y_true[:, label], y_pre[:, label])
            acc += label_acc
        ret = acc / y_true.shape[1]
    elif task == "binary-class":
        if y_score.ndim == 2:
            y_score = y_score[:, -1]
        else:
            assert y_score.ndim == 1
        ret = accuracy_score(y_true, y_score > threshold)
    else:
        ret = accuracy_score(y_true, np.argmax(y_score, axis=-1))
    return ret


MEDMNIST_TASK = {
    "binary": "binary-class",
    "multiclass": "multi-class",
    "multilabel": "multi-label, binary-class",
    "ordinal": "ordinal-regression",
}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_matches_sklearn(label_type, ties):
    probs, target = make_data(label_type, 300, ties=ties)
    got = medical_metrics(probs, target, label_type)
    ref = sklearn_reference(probs, target, label_type)
    assert set(got) == set(ref) | {"ece"}
    for name, value in ref.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("threshold", [0.5, 0.3])
@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_matches_medmnist_evaluator(label_type, threshold):
    probs, target = make_data(label_type, 300, seed=1, ties=True)  # ties, and p == threshold exactly
    got = medical_metrics(probs, target, label_type, threshold=threshold)
    # float32 scores, as MedMNIST gets them from a model: p == threshold compares in float32 there too
    task, y, p = MEDMNIST_TASK[label_type], target.numpy(), probs.numpy()
    assert got["auc"] == pytest.approx(getAUC(y, p, task), abs=1e-6)
    assert got["acc"] == pytest.approx(getACC(y, p, task, threshold), abs=1e-6)


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_ece_matches_torchmetrics_class(label_type):
    probs, target = make_data(label_type, 500, seed=2)
    if label_type == "binary":
        ref = CalibrationError(task="binary", n_bins=15, norm="l1")(probs, target)
    elif label_type == "multilabel":
        ece = CalibrationError(task="binary", n_bins=15, norm="l1")
        ref = np.mean([ece(probs[:, k].contiguous(), target[:, k].contiguous()).item() for k in range(K)])
    else:
        ref = CalibrationError(task="multiclass", num_classes=K, n_bins=15, norm="l1")(probs, target)
    assert medical_metrics(probs, target, label_type)["ece"] == pytest.approx(float(ref), abs=1e-6)


def test_ece_small_cases_by_hand():
    # 15 bins of width 1/15: 0.25 and 0.26 share bin 3, 0.55 is in bin 8, 0.95 in bin 14.
    # bin 3: |mean conf 0.255 - frequency 1/2| * 2/4; bin 8: |0.55 - 1| / 4; bin 14: |0.95 - 0| / 4
    binary = medical_metrics(torch.tensor([0.25, 0.26, 0.55, 0.95]), torch.tensor([0, 1, 1, 0]), "binary")
    assert binary["ece"] == pytest.approx(0.245 / 2 + 0.45 / 4 + 0.95 / 4, abs=1e-6)
    # top-1 confidences 0.7 (correct, bin 10) and 0.62 (wrong, bin 9)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.62, 0.08]])
    assert medical_metrics(probs, torch.tensor([0, 0]), "multiclass")["ece"] == pytest.approx(0.46, abs=1e-6)
    # per-label binary ECE, then the mean: label 0 (0.25 + 0.95) / 2, label 1 (0.45 + 0.25) / 2
    probs, target = torch.tensor([[0.25, 0.55], [0.95, 0.75]]), torch.tensor([[0, 1], [0, 1]])
    assert medical_metrics(probs, target, "multilabel")["ece"] == pytest.approx((0.6 + 0.35) / 2, abs=1e-6)


def test_undefined_auc_is_nan_and_left_out_of_the_macro_mean():
    probs, target = make_data("multiclass", 200, seed=3)
    target[target == 3] = 0  # class 3 has no positive sample
    ml_probs, ml_target = make_data("multilabel", 200, seed=3)
    ml_target[:, 0], ml_target[:, 1] = 0, 1  # label 0: no positive; label 1: no negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics / numpy must not warn about the missing classes
        got = medical_metrics(probs, target, "multiclass", class_names=["a", "b", "c", "d"])
        ml = medical_metrics(ml_probs, ml_target, "multilabel")
        binary = medical_metrics(torch.rand(20), torch.zeros(20, dtype=torch.long), "binary")
    ref = [roc_auc_score(target.numpy() == k, probs[:, k].numpy()) for k in range(3)]
    assert math.isnan(got["auc_d"]) and math.isnan(got["sensitivity_d"])
    assert got["specificity_d"] == pytest.approx(1 - (probs.argmax(1) == 3).float().mean().item())
    assert [got[f"auc_{n}"] for n in "abc"] == pytest.approx(ref, abs=1e-6)
    assert got["auc"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert math.isnan(ml["auc_0"]) and math.isnan(ml["auc_1"])
    ml_ref = [roc_auc_score(ml_target[:, k].numpy(), ml_probs[:, k].numpy()) for k in (2, 3)]
    assert ml["auc"] == pytest.approx(np.mean(ml_ref), abs=1e-6)
    assert math.isnan(binary["auc"]) and math.isnan(binary["sensitivity"]) and not math.isnan(binary["acc"])


@pytest.mark.parametrize(
    "label_type, probs_shape, target_shape",
    [
        ("multilabel", (8, 3), (8,)),
        ("multilabel", (8, 3), (8, 2)),
        ("binary", (8, 2), (8,)),
        ("multiclass", (8,), (8,)),
        ("ordinal", (8, 3), (7,)),
        ("multiclass", (0, 3), (0,)),
    ],
)
def test_bad_shapes_raise_naming_the_shapes(label_type, probs_shape, target_shape):
    probs, target = torch.full(probs_shape, 0.5), torch.zeros(target_shape, dtype=torch.long)
    got = re.escape(f"got probs {list(probs_shape)} and target {list(target_shape)}")
    for fn in (medical_metrics, bootstrap_ci):
        with pytest.raises(ValueError, match=rf"{label_type}: expected probs .* {got}"):
            fn(probs, target, label_type)


def test_other_bad_inputs_raise():
    with pytest.raises(ValueError, match=re.escape(str(LABEL_TYPES))):
        medical_metrics(torch.rand(8), torch.zeros(8, dtype=torch.long), "regression")
    with pytest.raises(ValueError, match="probabilities in"):  # logits
        medical_metrics(torch.randn(8, 3) * 5, torch.zeros(8, dtype=torch.long), "multiclass")
    with pytest.raises(ValueError, match=r"integers in 0\.\.2"):
        medical_metrics(torch.rand(8, 3), torch.full((8,), 3), "ordinal")
    with pytest.raises(ValueError, match="2 class_names for K=3"):
        medical_metrics(
            torch.rand(8, 3), torch.zeros(8, dtype=torch.long), "multiclass", class_names=["a", "b"]
        )
    with pytest.raises(ValueError, match="supports"):
        bootstrap_ci(torch.rand(8), torch.zeros(8, dtype=torch.long), "binary", metrics=("qwk",))


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_bootstrap_contains_point_estimate_and_narrows_with_more_data(label_type, capsys):
    probs, target = make_data(label_type, 200, seed=4)
    big_probs, big_target = make_data(label_type, 800, seed=5)  # same distribution, 4x the samples
    point, big_point = (
        medical_metrics(probs, target, label_type),
        medical_metrics(big_probs, big_target, label_type),
    )
    ci = bootstrap_ci(probs, target, label_type, num_samples=500)
    big_ci = bootstrap_ci(big_probs, big_target, label_type, num_samples=500)
    for name in ("auc", "acc"):
        assert ci[name][0] <= point[name] <= ci[name][1], name
        assert big_ci[name][0] <= big_point[name] <= big_ci[name][1], name
        # the width shrinks like 1 / sqrt(N): about half
        assert big_ci[name][1] - big_ci[name][0] < 0.75 * (ci[name][1] - ci[name][0]), name
    assert capsys.readouterr() == ("", "")


def test_bootstrap_is_seeded():
    probs, target = make_data("multilabel", 200, seed=6)
    a = bootstrap_ci(probs, target, "multilabel", num_samples=200, seed=7)
    assert a == bootstrap_ci(probs, target, "multilabel", num_samples=200, seed=7)
    assert a != bootstrap_ci(probs, target, "multilabel", num_samples=200, seed=8)


@pytest.mark.parametrize("label_type", LABEL_TYPES)
def test_bootstrap_recomputes_medical_metrics_on_each_resample(label_type):
    """The weighted / batched paths give what medical_metrics gives on the resampled rows themselves."""
    probs, target = make_data(label_type, 60, seed=9)
    names = ["auc", "acc", "sensitivity", "specificity", "ece"] + (
        ["mae", "qwk"] if label_type == "ordinal" else []
    )
    ci = bootstrap_ci(probs, target, label_type, metrics=names, num_samples=20, level=0.8, seed=3)
    probs, target = _canonical_order(probs, target)  # bootstrap_ci's row order
    rows = torch.randint(0, 60, (20, 60), generator=torch.Generator().manual_seed(3))  # the same draws
    per_resample = [medical_metrics(probs[r], target[r], label_type) for r in rows]
    for name in names:
        values = torch.tensor([m[name] for m in per_resample], dtype=torch.float64)
        assert not values.isnan().any()
        assert ci[name] == pytest.approx(torch.quantile(values, torch.tensor([0.1, 0.9]).double()).tolist())


def test_bootstrap_needs_half_the_resamples_usable():
    # 4 samples, one per class: a resample defines every class's AUC only if it draws all 4 (p ~ 0.09)
    probs = torch.eye(4) * 0.7 + 0.075
    ci = bootstrap_ci(probs, torch.arange(4), "multiclass", num_samples=200)
    assert all(math.isnan(v) for v in ci["auc"]) and not any(math.isnan(v) for v in ci["acc"])


def test_format_report_contains_the_numbers():
    probs, target = make_data("ordinal", 200, seed=10)
    names = ["none", "mild", "moderate", "severe"]
    metrics = medical_metrics(probs, target, "ordinal", class_names=names)
    metrics["auc_severe"] = math.nan
    ci = bootstrap_ci(probs, target, "ordinal", metrics=("auc", "acc", "qwk"), num_samples=100)
    report = format_report(metrics, ci, "RetinaMNIST test")
    assert report.startswith("### RetinaMNIST test")
    for name in ("auc", "acc", "qwk"):
        assert f"{metrics[name]:.3f} [95% CI {ci[name][0]:.3f}, {ci[name][1]:.3f}]" in report
    for n in names[:3]:
        row = [metrics[f"{key}_{n}"] for key in ("auc", "sensitivity", "specificity")]
        assert f"| {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |" in report
    assert "| severe | n/a |" in report
    assert f"{metrics['ece']:.3f}" in report and f"**MAE** {metrics['mae']:.3f}" in report
    binary = format_report(medical_metrics(*make_data("binary", 50), "binary"), None, "PneumoniaMNIST")
    assert "| positive |" in binary and "CI" not in binary and "MAE" not in binary


def test_module_stays_plain_torch():
    tree = ast.parse(Path(medical.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots = {name.split(".")[0] for name in imported}
    assert not roots & {"lightning", "pytorch_lightning", "hydra", "tasks"}


def test_bootstrap_ci_does_not_depend_on_row_order():
    # DDP gathers predictions rank by rank: the same rows in another order, the same CI.
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(60, 3, generator=g).softmax(-1)
    target = torch.randint(0, 3, (60,), generator=g)
    perm = torch.randperm(60, generator=g)
    a = bootstrap_ci(probs, target, "multiclass", num_samples=200)
    b = bootstrap_ci(probs[perm], target[perm], "multiclass", num_samples=200)
    assert a == b
