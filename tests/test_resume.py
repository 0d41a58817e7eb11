"""Resume and evaluate-only are exact: a run killed after an epoch and resumed with
`resume_from=<run dir>` ends where an uninterrupted run ends (same weights, same metrics), and
`train=false ckpt_path=<best>` reproduces the test metrics of the run that wrote it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tasks.callbacks import get_rng_states, set_rng_states
from train import train

ROOT = Path(__file__).resolve().parents[1]
# A tiny ViT on the procedural shapes, on the CPU, deterministic. Dropout on, so that the
# resumed run must also continue the dropout masks; shuffling and the default random crops
# and flips are seeded by (seed, epoch, index) in the DataModule.
TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.patch_size=8",
    "model.drop_rate=0.1",
    "data.img_size=32",
    "data.batch_size=16",
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "callbacks.progress_bar.refresh_rate=0",
]
KILLER = f"+callbacks.killer._target_={__name__}.KillAtSecondEpoch"
WITHOUT_RNG_STATE = "~callbacks.rng_state"


class Killed(Exception):
    pass


class KillAtSecondEpoch(L.Callback):
    """Stands in for a kill: the run dies as its 2nd epoch starts, after epoch 1's last.ckpt."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise Killed


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"paths.output_dir={output_dir}", *overrides])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final weights of a run: its last.ckpt."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json less what differs between two runs of the same thing (time, folder)."""
    return {**metrics, "wall_time_s": None, "best_ckpt": Path(metrics["best_ckpt"]).name}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    metrics, _ = train(compose_cfg(run_dir))
    return run_dir, metrics


@pytest.mark.parametrize("rng_state", [True, False], ids=["rng-state-callback", "without-it"])
def test_killed_run_resumed_ends_as_if_never_stopped(
    tmp_path: Path, uninterrupted: tuple[Path, dict[str, Any]], rng_state: bool
) -> None:
    ref_dir, ref_metrics = uninterrupted
    # last.ckpt is written after every epoch, whether the monitored metric improved or not.
    assert torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 4
    switch = [] if rng_state else [WITHOUT_RNG_STATE]
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(compose_cfg(run_dir, *switch, KILLER))
    assert not (run_dir / "metrics.json").exists()
    killed_csv = (run_dir / "csv" / "metrics.csv").read_text()

    metrics, objects = train(compose_cfg(tmp_path / "unused", *switch, f"resume_from={run_dir}"))
    assert objects["trainer"].current_epoch == 2
    ref, resumed = weights(ref_dir), weights(run_dir)
    max_diff = max((ref[k] - resumed[k]).abs().max().item() for k in ref)
    if not rng_state:
        # Lightning restores weights, optimizer and epoch but not the generators: the 2nd epoch
        # replays the 1st one's dropout masks (order and crops are seeded by epoch and index).
        assert max_diff > 0, "the weights match without the callback: the test no longer guards it"
        return
    assert all(torch.equal(ref[k], resumed[k]) for k in ref), f"max abs difference {max_diff}"
    # The run's own folder, with the whole run's bookkeeping: best checkpoint, val/acc_best and
    # the test on the best weights are those of the uninterrupted run.
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert comparable(metrics) == comparable(ref_metrics)
    assert Path(metrics["best_ckpt"]).parent == run_dir / "checkpoints"
    assert not (tmp_path / "unused").exists()
    # CSVLogger would have deleted the killed run's log: it is kept next to the new one.
    assert (run_dir / "csv" / "metrics.1.csv").read_text() == killed_csv
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_test_only_reproduces_the_test_metrics_of_the_fit(
    tmp_path: Path, uninterrupted: tuple[Path, dict[str, Any]]
) -> None:
    _, fit_metrics = uninterrupted
    metrics, _ = train(compose_cfg(tmp_path, "train=false", f"ckpt_path={fit_metrics['best_ckpt']}"))
    test_keys = {k for k in fit_metrics if k.startswith("test/")}
    assert test_keys >= {"test/acc", "test/loss"}
    assert {k: metrics[k] for k in test_keys} == {k: fit_metrics[k] for k in test_keys}


def test_resuming_a_finished_run_keeps_its_metrics(tmp_path: Path) -> None:
    # Training a finished run for longer: its metrics.json is kept, not overwritten.
    short = ["test=false", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    first, _ = train(compose_cfg(tmp_path, *short, "trainer.max_epochs=1"))
    second, objects = train(compose_cfg(tmp_path / "unused", *short, f"resume_from={tmp_path}"))
    assert objects["trainer"].current_epoch == 2
    assert json.loads((tmp_path / "metrics.1.json").read_text()) == first
    assert json.loads((tmp_path / "metrics.json").read_text()) == second
    assert (tmp_path / "csv" / "metrics.1.csv").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()


def test_resume_from_needs_a_last_checkpoint_and_excludes_ckpt_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/checkpoints/last.ckpt"):
        train(compose_cfg(tmp_path / "new", f"resume_from={tmp_path}"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").touch()
    with pytest.raises(ValueError, match="resume_from or ckpt_path, not both"):
        train(compose_cfg(tmp_path / "new", f"resume_from={tmp_path}", f"ckpt_path={tmp_path}/x.ckpt"))
    with pytest.raises(ValueError, match="resume_from continues training"):
        train(compose_cfg(tmp_path / "new", f"resume_from={tmp_path}", "train=false"))
    assert not (tmp_path / "new").exists()


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    def draw() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), random.random()

    np.random.randn()  # leaves a cached Gaussian in numpy's state
    torch.save({"rng": get_rng_states()}, tmp_path / "c.ckpt")
    expected = draw()
    set_rng_states(torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"])
    assert draw() == expected
