"""What the data decides for `task=medical data=medmnist data.path=FILE` (issue: any MedMNIST
file, grey or RGB, runs as written), the patch-size rule, and the recipe's bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from mmtrans.models import create_image_classifier
from mmtrans.models.vit import auto_patch_size
from train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.fast_dev_run=true", "logger=none", "callbacks=none", "task.num_heatmaps=0",
        "task.bootstrap_samples=0", "model.depth=1", "data.batch_size=4"]


def write_medmnist(path: Path, shape: tuple[int, ...], labels: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    np.savez(path, **{f"{s}_images": images for s in ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    return path


def run(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=medical", "data=medmnist", *TINY, *overrides,
                                           f"paths.output_dir={tmp_path}"])
    return train(cfg)


@pytest.mark.parametrize(("name", "shape", "labels", "chans", "label_type"), [
    ("pathmnist.npz", (28, 28, 3), np.arange(16).reshape(16, 1) % 9, 3, "multiclass"),  # RGB, 9 classes
    ("breastmnist.npz", (28, 28), np.arange(16) % 2, 1, "binary"),
    ("chestmnist_64.npz", (64, 64), (np.arange(16 * 14).reshape(16, 14) % 3 == 0).astype(np.int64), 1, "multilabel"),
    ("myscans.npz", (28, 28, 3), np.arange(16) % 4, 3, "multiclass"),  # a name MedMNIST does not know
])
def test_any_medmnist_file_runs_as_written(tmp_path, name, shape, labels, chans, label_type) -> None:
    """The file decides size, channels, classes and label type; the preset's data.name does not."""
    file = write_medmnist(tmp_path / name, shape, labels)
    _, built = run(tmp_path / "run", f"data.path={file}", "data.name=breastmnist")
    pp, model = built["datamodule"].preprocessing, built["model"]
    assert (pp.img_size, pp.in_chans) == (shape[0], chans)
    assert model.encoder.patch_embed.patch_size == ((4, 4) if shape[0] == 28 else (8, 8))
    # The recipe's conv stem, 2 convs per halving of the grid (model.stem_depth=2): 4 at 28 px, 6 at 64.
    convs = [m for m in model.encoder.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == (4 if shape[0] == 28 else 6)
    assert built["task"].hparams.label_type == label_type
    assert built["task"].hparams.preprocessing["in_chans"] == chans


def test_patch_size_follows_the_image_size() -> None:
    assert [auto_patch_size(s) for s in (28, 32, 64, 96, 128, 224, 384)] == [4, 4, 8, 8, 16, 16, 16]
    assert create_image_classifier("vit_tiny", 2, img_size=28, depth=1).encoder.patch_embed.grid_size == (7, 7)


def test_bad_input_names_the_value(tmp_path) -> None:
    file = write_medmnist(tmp_path / "breastmnist.npz", (28, 28), np.arange(16) % 2)
    # (Hydra wraps a constructor's error; the message is ours.)
    with pytest.raises(Exception, match=r"patch_size 16 does not divide the image size 28x28 .*model.patch_size"):
        run(tmp_path / "a", f"data.path={file}", "model.patch_size=16")
    bad = write_medmnist(tmp_path / "pneumoniamnist.npz", (28, 28), np.arange(16) % 3)  # binary set, label 2
    with pytest.raises(ValueError, match=r"pneumoniamnist.npz: 'train_labels' holds labels 0..2, outside 0..1"):
        run(tmp_path / "b", f"data.path={bad}")


def test_recipe_uses_the_ema_callback_of_callbacks_ema_with_decay_0_99(tmp_path) -> None:
    """The recipe's weight EMA is `callbacks=ema callbacks.ema.decay=0.99` (what was measured),
    written out in the recipe (a specialize file cannot pick a config group)."""
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        recipe = compose("config", overrides=["task=medical", "data=medmnist", "data.path=x.npz"])
        asked = compose("config", overrides=["task=medical", "data=medmnist", "data.path=x.npz", "model=resnet18",
                                             "callbacks=ema", "callbacks.ema.decay=0.99"])
    assert OmegaConf.to_container(recipe.callbacks.ema) == OmegaConf.to_container(asked.callbacks.ema)
    assert OmegaConf.to_container(recipe.callbacks) == OmegaConf.to_container(asked.callbacks)
