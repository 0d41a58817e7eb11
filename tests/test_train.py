"""train.py end to end on a tiny model and tiny data: in-process through `train(cfg)`, and
through the real command line (Hydra's own run folder, error reporting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from tasks.checkpoint import load_model
from train import train

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
# Small enough for a CPU test: 1 block of width 32 on 4x4 patches of 8 px. `++`: add the key
# or override it (the presets set the architecture in code, the YAML lists only what differs).
TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.patch_size=8",
    "data.img_size=32",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "callbacks.progress_bar.refresh_rate=0",
]
TINY_SHAPES = ["data.num_train=64", "data.num_val=32", "data.num_test=32"]
METRIC_KEYS = {
    "val/loss",
    "val/acc",
    "val/acc_top5",
    "test/loss",
    "test/acc",
    "test/acc_top5",
    "best_ckpt",
    "wall_time_s",
}


def compose_cfg(output_dir: Path, *overrides: str, data: list[str] = TINY_SHAPES) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, *data, f"paths.output_dir={output_dir}", *overrides])


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_fast_dev_run_writes_metrics(tmp_path: Path) -> None:
    metrics, objects = train(compose_cfg(tmp_path, "trainer.fast_dev_run=true"))
    assert read_metrics(tmp_path) == metrics
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["best_ckpt"] is None  # fast_dev_run saves no checkpoint worth testing
    # The resolved config and the code version sit beside the metrics.
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert set(info["git"]) == {"commit", "dirty"}
    assert f"output_dir: {tmp_path}" in (tmp_path / "config_resolved.yaml").read_text()
    assert all(isinstance(metrics[k], float) for k in METRIC_KEYS - {"best_ckpt"})
    assert objects["datamodule"].num_classes == objects["task"].hparams.num_classes == 6


def test_fit_then_evaluate_the_best_checkpoint_alone(tmp_path: Path) -> None:
    fit_dir, test_dir = tmp_path / "fit", tmp_path / "test"
    metrics, _ = train(compose_cfg(fit_dir, "trainer.max_epochs=1"))
    best = Path(metrics["best_ckpt"])
    assert best.is_file() and best.parent == fit_dir / "checkpoints"
    assert (fit_dir / "checkpoints" / "last.ckpt").is_file()
    assert "val/acc_best" in metrics
    assert not list(fit_dir.rglob("*.tmp")), "AtomicCheckpointIO left a temporary file"
    # data.mean/std were null (the encoder's normalisation): the checkpoint says which was used.
    preprocessing = load_model(best)[1]["preprocessing"]
    assert preprocessing["mean"] == [0.5, 0.5, 0.5] and preprocessing["std"] == [0.5, 0.5, 0.5]
    assert preprocessing["img_size"] == 32 and preprocessing["in_chans"] == 3

    only_test, _ = train(compose_cfg(test_dir, "train=false", f"ckpt_path={best}"))
    assert "train/loss" not in only_test and "val/acc" not in only_test
    # Same weights, same test images: the same accuracy as the test after fitting.
    assert only_test["test/acc"] == pytest.approx(metrics["test/acc"])
    assert not (test_dir / "checkpoints").exists()


def test_image_folder_data(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (images / label).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40 + i, 36), colour).save(images / label / f"{i}.png")
    run_dir = tmp_path / "run"
    data = ["data=imagefolder", f"data.root={images}", "data.batch_size=4"]
    _, objects = train(compose_cfg(run_dir, "trainer.fast_dev_run=true", data=data))
    assert objects["datamodule"].class_names == ["blue", "red"]
    assert objects["task"].hparams.class_names == ["blue", "red"]
    # Two classes: no top-5 accuracy.
    assert METRIC_KEYS - {"val/acc_top5", "test/acc_top5"} <= read_metrics(run_dir).keys()


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"real images not found at {HYMENOPTERA}")
def test_real_image_folder_with_train_val_layout(tmp_path: Path) -> None:
    # Photos up to 2592 px and a palette GIF: one batch of each split through the real config.
    data = ["data=imagefolder", f"data.root={HYMENOPTERA}", "data.batch_size=4"]
    metrics, objects = train(compose_cfg(tmp_path, "trainer.fast_dev_run=true", data=data))
    assert objects["datamodule"].class_names == ["ants", "bees"]
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_model_num_classes_must_match_the_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model.num_classes=3 but the data has 6 classes"):
        train(compose_cfg(tmp_path, "model.num_classes=3"))


def test_required_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no value given for data.root"):
        train(compose_cfg(tmp_path, "data=imagefolder", data=[]))


def test_test_only_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ckpt_path"):
        train(compose_cfg(tmp_path, "train=false"))


def test_checkpoint_that_does_not_fit_is_named_before_anything_runs(tmp_path: Path) -> None:
    metrics, _ = train(compose_cfg(tmp_path / "fit", "trainer.max_epochs=1", "test=false"))
    ckpt = metrics["best_ckpt"]
    for mode in ("train=false", "train=true"):  # evaluate it, or resume from it
        with pytest.raises(ValueError, match=rf"checkpoint {ckpt} do not fit.*\n.*shape mismatch: model\.encoder"):
            train(compose_cfg(tmp_path / "other", "model.embed_dim=64", mode, f"ckpt_path={ckpt}"))
    assert not (tmp_path / "other" / "checkpoints").exists()
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        train(compose_cfg(tmp_path / "other", "train=false", f"ckpt_path={tmp_path}/nope.ckpt"))


def run_cli(*overrides: str, data: list[str] = TINY_SHAPES) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "train.py", *TINY, *data, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_run_writes_its_run_folder(tmp_path: Path) -> None:
    proc = run_cli("trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert METRIC_KEYS <= read_metrics(tmp_path).keys()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert "classification finished" in proc.stdout


@pytest.mark.parametrize(
    "data,overrides,message",
    [
        (["data=imagefolder", "data.root=/nonexistent/images"], [], "/nonexistent/images"),
        (TINY_SHAPES, ["model.preset=vit_nope"], "vit_nope"),
        (["data=imagefolder", "data.root={images}", "data.batch_size=2"], [], "broken.png"),
    ],
    ids=["missing-data-folder", "unknown-preset", "corrupt-image"],
)
def test_cli_bad_input_fails_clearly(
    tmp_path: Path, data: list[str], overrides: list[str], message: str
) -> None:
    images = tmp_path / "images"
    for split in ("train", "val"):
        for label in ("a", "b"):
            (images / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(images / split / label / f"{i}.png")
    (images / "val" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = [d.format(images=images) for d in data]
    run_dir = tmp_path / "run"
    proc = run_cli(*overrides, f"hydra.run.dir={run_dir}", data=data)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not list(run_dir.rglob("*.ckpt"))
    assert not (run_dir / "metrics.json").exists()


def test_tiny_vit_learns_the_procedural_shapes_within_a_minute(tmp_path: Path) -> None:
    """Learnability: the default data + model family + task beat chance (1/6) clearly."""
    data = ["data.num_train=3000", "data.num_val=300", "data.num_test=300"]
    size = ["model.embed_dim=64", "model.depth=2", "model.num_heads=2", "data.batch_size=32"]
    metrics, _ = train(compose_cfg(tmp_path, *size, "trainer.max_epochs=3", "task.lr=2e-3", "test=false",
                                   data=data))
    assert metrics["val/acc_best"] > 0.4, metrics
