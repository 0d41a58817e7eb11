"""NanGuard: a NaN/Inf loss or gradient stops training with the step, the batch's sample ids
and a checkpoint of the last good weights."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from tasks.callbacks import NanGuard, NonFiniteError
from train import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "data.img_size=32",
        "data.batch_size=16", "data.num_train=64", "data.num_val=16", "data.num_test=16",
        "trainer.accelerator=cpu", "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0",
        "trainer.max_epochs=2", "task.warmup_epochs=0"]


def test_diverging_run_stops_with_step_ids_and_last_good_checkpoint(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.output_dir={tmp_path}", "task.lr=1e30"])
    with pytest.raises(NonFiniteError) as info:
        train(cfg)
    message = str(info.value)
    assert "at global step" in message and "shapes/0/" in message and "nan_guard_last_good.ckpt" in message
    ckpt = torch.load(tmp_path / "nan_guard_last_good.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_non_finite_gradient_is_named(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.grad = torch.tensor([[float("inf"), 0.0], [0.0, 0.0]])
    model[1].weight.grad = torch.zeros(1, 2)
    saved = []
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), default_root_dir=str(tmp_path), global_step=7,
                              current_epoch=1, save_checkpoint=saved.append)
    guard = NanGuard()
    guard.on_train_batch_start(trainer, model, {"id": ["a/1", "a/2"]}, 0)
    with pytest.raises(NonFiniteError, match=r"non-finite gradients in 0.weight at global step 7 .*a/1, a/2"):
        guard.on_before_optimizer_step(trainer, model, None)
    assert saved == [tmp_path / "nan_guard_last_good.ckpt"]
    guard.on_before_backward(trainer, model, torch.tensor(0.5))  # a finite loss passes
