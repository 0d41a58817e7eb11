"""`model=resnet18` through train.py: the medical task end to end (class activation heat
maps, test, a checkpoint and an export that rebuild the model) and classification."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from tasks.checkpoint import load_model
from tasks.config_check import check_config
from tasks.export import export
from train import train

ROOT = Path(__file__).resolve().parents[1]
# 16-24 px keep a ResNet-18 with the small stem (auto: on at <= 64 px) at a few ms per image.
TINY = [
    "model=resnet18",
    "data.img_size=16",
    "data.batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "callbacks.progress_bar.refresh_rate=0",
]


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"paths.output_dir={output_dir}", *overrides])


def test_medical_resnet18_end_to_end_and_checkpoint_round_trip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = compose_cfg(
        run, "task=medical", "data=medical_scans", "data.img_size=24", "data.num_train=32", "data.num_val=16",
        "data.num_test=16", "trainer.max_epochs=1", "task.bootstrap_samples=20", "task.num_heatmaps=2",
    )
    metrics, objects = train(cfg)
    model = objects["model"]
    assert model.encoder.small_input_stem and model.head.fc.out_features == 4  # 4 findings, multilabel
    assert {"test/auc", "val/auc", "test/auc_ci_low"} <= metrics.keys()
    with Image.open(run / "heatmaps.png") as grid:  # input + one CAM column
        assert grid.mode == "RGB" and grid.width < 3 * (24 * 4 + 4) + 4
    rebuilt, info = load_model(metrics["best_ckpt"])
    assert info["config"]["model"]["_target_"] == "mmtrans.models.create_cnn_classifier"
    images = next(iter(objects["datamodule"].test_dataloader()))["image"]
    with torch.no_grad():
        expected = model.eval()(images)
        torch.testing.assert_close(rebuilt(images), expected, atol=1e-5, rtol=1e-5)
        exported, _ = load_model(export(metrics["best_ckpt"], tmp_path / "export"))
        torch.testing.assert_close(exported(images), expected, atol=1e-5, rtol=1e-5)


def test_classification_resnet18_fast_dev_run(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path, "task=classification", "data.num_train=16", "data.num_val=8",
                      "data.num_test=8", "trainer.fast_dev_run=true", "model.small_input_stem=false")
    metrics, objects = train(cfg)
    assert not objects["model"].encoder.small_input_stem
    assert {"val/acc", "test/acc"} <= metrics.keys()


def test_medmnist_sweep_of_vit_tiny_and_resnet18_composes(tmp_path: Path) -> None:
    # `-m task=medical data=medmnist model=vit_tiny,resnet18`: both jobs' configs are valid;
    # vit_tiny gets the recipe (conf/specialize/medical_vit_tiny_medmnist.yaml) and its patch
    # size from the image (4 px at 28: tests/test_medmnist_recipe.py).
    for model in ("vit_tiny", "resnet18"):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["task=medical", "data=medmnist", "data.path=x.npz", f"model={model}",
                                               f"paths.output_dir={tmp_path}"])
        check_config(cfg)
        assert cfg.data.img_size is None  # from the file (28 px), resolved by the DataModule
        assert cfg.model.get("patch_size") is None and cfg.model.get("stem") == ("conv" if model == "vit_tiny" else None)
