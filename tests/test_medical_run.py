"""`train.py task=medical` end to end: every label type through Hydra, reports, heat maps,
CSV + 16-bit images with patient-level splits, and a checkpoint that rebuilds alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from tasks.checkpoint import load_model
from train import train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TINY = [
    "task=medical",
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.patch_size=4",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "callbacks.progress_bar.refresh_rate=0",
    "task.bootstrap_samples=200",
    "task.num_heatmaps=4",
]
TINY_SCANS = ["data.num_train=64", "data.num_val=32", "data.num_test=48"]
HEADLINE = {"test/auc", "test/acc", "test/auc_ci_low", "test/auc_ci_high", "test/acc_ci_low", "test/acc_ci_high",
            "test/ece", "val/auc", "val/acc"}


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"paths.output_dir={output_dir}", *overrides])


def write_medmnist(path: Path, make_labels, rgb: bool, n: int = 48, size: int = 28) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = make_labels(n)
        shape = (n, size, size, 3) if rgb else (n, size, size)
        images = rng.integers(0, 60, shape, dtype=np.uint8)
        # A learnable signal: brightness grows with the (first) label.
        first = labels[:, 0] if labels.ndim == 2 else labels
        images += (first.reshape(-1, *[1] * (images.ndim - 1)) * 40).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


LABEL_CASES = {
    "binary": ("breastmnist", lambda n: (np.arange(n) % 2).reshape(n, 1), False, 1),
    "multiclass": ("bloodmnist", lambda n: (np.arange(n) % 8).reshape(n, 1), True, 8),
    "ordinal": ("retinamnist", lambda n: (np.arange(n) % 5).reshape(n, 1), True, 5),
}


@pytest.mark.parametrize("label_type", ["binary", "multiclass", "ordinal", "multilabel"])
def test_fast_dev_run_each_label_type(tmp_path: Path, label_type: str) -> None:
    if label_type == "multilabel":  # the default data: procedural scans, 4 findings
        data, outputs = TINY_SCANS, 4
    else:
        name, make, rgb, outputs = LABEL_CASES[label_type]
        npz = write_medmnist(tmp_path / f"{name}.npz", make, rgb)
        # One batch of all 48 samples: every class in (almost) every bootstrap resample.
        data = ["data=medmnist", f"data.path={npz}", f"data.in_chans={3 if rgb else 1}", "data.batch_size=48"]
    run = tmp_path / "run"
    metrics, objects = train(compose_cfg(run, *data, "trainer.fast_dev_run=true"))
    assert objects["task"].hparams.label_type == label_type
    assert objects["model"].head.fc.out_features == outputs
    assert HEADLINE <= metrics.keys()
    assert metrics["test/auc_ci_low"] <= metrics["test/auc"] <= metrics["test/auc_ci_high"]
    assert metrics["test/acc_ci_low"] <= metrics["test/acc"] <= metrics["test/acc_ci_high"]
    if label_type == "ordinal":
        assert {"test/qwk", "test/mae"} <= metrics.keys()
    report = (run / "report.md").read_text()
    assert f"{metrics['test/auc']:.3f}" in report and "95% CI" in report
    with Image.open(run / "heatmaps.png") as grid:
        assert grid.mode == "RGB" and grid.height > 4 * 28
    assert json.loads((run / "metrics.json").read_text())["test/auc"] == metrics["test/auc"]


def write_png16(path: Path, value: int) -> None:
    # 12-bit data in a 16-bit container, as many scanners write it.
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 1500, (32, 32)).astype(np.uint16)
    pixels[8:24, 8:24] += np.uint16(value)
    Image.fromarray(pixels).save(path)


def test_csv_png16_patient_split_and_checkpoint_rebuild(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for patient in range(24):
        label = "lesion" if patient % 2 else "normal"
        for visit in range(2):
            name = f"p{patient}_{visit}.png"
            write_png16(images / name, 2500 if label == "lesion" else 0)
            rows.append({"file": name, "finding": label, "patient": f"P{patient:03d}"})
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "finding", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "run"
    overrides = [
        "data=medical_csv", f"data.annotations={table}", f"data.root={images}", "data.path_column=file",
        "data.label_columns=finding", "data.patient_column=patient", "data.img_size=32", "data.batch_size=8",
        "data.test_fraction=0.25", "task.class_weights=balanced", "trainer.max_epochs=2",
    ]
    metrics, objects = train(compose_cfg(run, *overrides))
    splits = objects["datamodule"].splits
    patients = [set(d.patients) for d in (splits.train, splits.val, splits.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    task = objects["task"]
    assert task.hparams.label_type == "binary" and task.hparams.class_names == ["lesion", "normal"]
    train_labels = splits.train.labels  # positive = class 1 ("normal"); pos_weight = n_neg / n_pos
    assert task.hparams.class_weights == [pytest.approx((train_labels == 0).sum() / (train_labels == 1).sum())]
    assert metrics["best_ckpt"] and HEADLINE <= metrics.keys()
    model, info = load_model(metrics["best_ckpt"])  # one logit for binary, rebuilt from the checkpoint
    assert model.head.fc.out_features == 1 and info["label_type"] == "binary"
    batch = next(iter(objects["datamodule"].test_dataloader()))
    with torch.no_grad():
        assert torch.allclose(model(batch["image"]), task.model.eval()(batch["image"]), atol=1e-5)


@pytest.mark.skipif(not (SHARED / "breastmnist").is_dir(), reason="../shared/data/breastmnist not present")
def test_real_breastmnist_one_epoch(tmp_path: Path) -> None:
    npz = SHARED / "breastmnist" / "breastmnist.npz"
    metrics, objects = train(compose_cfg(tmp_path, "data=medmnist", f"data.path={npz}", "trainer.max_epochs=1",
                                         "data.batch_size=64", "task.class_weights=balanced"))
    assert objects["task"].hparams.class_weights == [pytest.approx(147 / 399)]  # n_neg / n_pos of train
    assert 0.0 <= metrics["test/auc"] <= 1.0 and metrics["test/auc_ci_low"] < metrics["test/auc_ci_high"]


def test_tiny_vit_finds_the_findings(tmp_path: Path) -> None:
    # The default data is learnable: a 1-block ViT beats chance clearly within ~30 s.
    size = ["data.num_train=4096", "data.num_val=256", "data.num_test=64",
            "model.embed_dim=64", "model.num_heads=4", "model.depth=2", "model.patch_size=8",
            "model.global_pool=avg", "trainer.gradient_clip_val=1.0", "data.batch_size=32"]
    metrics, _ = train(compose_cfg(tmp_path, *size, "trainer.max_epochs=3", "task.lr=2e-3", "test=false"))
    assert metrics["val/auc_best"] > 0.72, metrics  # 0.78 here; chance is 0.5
