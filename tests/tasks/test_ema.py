"""WeightEMA (callbacks=ema): the average after N steps is timm's formula computed by hand,
validation and test see the EMA weights, checkpoints hold them (load_model gives the EMA
model), and resume_from continues both the training weights and the average exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks.checkpoint import load_model
from tasks.ema import WeightEMA
from train import train

ROOT = Path(__file__).resolve().parents[2]


class TinyTask(L.LightningModule):
    """A network with BatchNorm (buffers are averaged too) under `self.model`, as our tasks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self.model(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/loss", F.cross_entropy(self.model(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Recorder(L.Callback):
    """The training weights after each optimizer step (runs before WeightEMA: listed first)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


def loader(seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


def fit(ema: WeightEMA, epochs: int = 1) -> tuple[TinyTask, Recorder, L.Trainer]:
    task, recorder = TinyTask(), Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[recorder, ema])
    trainer.fit(task, train_dataloaders=loader(0), val_dataloaders=loader(1))
    return task, recorder, trainer


def manual_ema(states: list[dict[str, torch.Tensor]], decay_at) -> dict[str, torch.Tensor]:
    ema = {k: v.clone() for k, v in states[0].items()}  # the first update copies (decay 0 at step 1)
    for step, state in enumerate(states[1:], start=2):
        d = decay_at(step)
        ema = {k: d * ema[k] + (1 - d) * v if v.is_floating_point() else v.clone() for k, v in state.items()}
    return ema


@pytest.mark.parametrize("use_warmup", [False, True], ids=["fixed-decay", "warmup"])
def test_ema_after_n_steps_is_the_manual_average(use_warmup: bool) -> None:
    ema = WeightEMA(decay=0.7, use_warmup=use_warmup, warmup_power=0.75)
    task, recorder, _ = fit(ema)
    assert len(recorder.states) == 5
    # After optimizer step k timm uses 1 - (1 + (k - 1) / gamma) ** -power, capped at decay.
    expected = manual_ema(recorder.states, (lambda k: min(1 - k ** -0.75, 0.7)) if use_warmup else (lambda k: 0.7))
    got = ema.ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, atol=1e-6, rtol=1e-6)
    assert not torch.equal(got["3.weight"], recorder.states[-1]["3.weight"])  # an average, not a copy
    # After fit the task holds the training weights again (swapped back after validation).
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, recorder.states[-1][k])


def evaluate(model: nn.Module, data: DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in data]
    return float(sum(losses) / len(data.dataset))


def test_validation_and_test_run_on_ema_weights_and_checkpoints_hold_them(tmp_path: Path) -> None:
    ema = WeightEMA(decay=0.8)
    task, recorder, trainer = fit(ema)
    raw = TinyTask().model
    raw.load_state_dict(recorder.states[-1])
    val_ema, val_raw = evaluate(ema.ema.module, loader(1)), evaluate(raw, loader(1))
    assert abs(val_ema - val_raw) > 1e-4
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(val_ema, abs=1e-6)
    # Test without a checkpoint: the EMA swapped in, the training weights back after.
    trainer.test(task, dataloaders=loader(1), verbose=False)
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(val_ema, abs=1e-6)
    assert torch.equal(task.model[3].weight, recorder.states[-1]["3.weight"])

    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ema_state = ema.ema.module.state_dict()
    assert all(torch.equal(ckpt["state_dict"]["model." + k], v) for k, v in ema_state.items())
    training = ckpt["callbacks"]["WeightEMA"]["training_weights"]
    assert all(torch.equal(training[k], v) for k, v in recorder.states[-1].items())
    # Evaluating that checkpoint (a new trainer, test-only): the model is the EMA, not swapped.
    tester = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, callbacks=[WeightEMA(decay=0.8)])
    tester.test(TinyTask(), dataloaders=loader(1), ckpt_path=path, verbose=False)
    assert tester.callback_metrics["test/loss"].item() == pytest.approx(val_ema, abs=1e-6)


def test_bad_decay_is_named() -> None:
    with pytest.raises(ValueError, match="callbacks.ema.decay"):
        WeightEMA(decay=1.5)


# -- through train.py: load_model and exact resume ---------------------------------------------
TINY = ["callbacks=ema", "callbacks.ema.decay=0.9", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "model.patch_size=8", "model.drop_rate=0.1", "data.img_size=32", "data.batch_size=16",
        "data.num_train=64", "data.num_val=32", "data.num_test=32", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.deterministic=true", "trainer.max_epochs=2", "test=false",
        "callbacks.progress_bar.refresh_rate=0"]


class Killed(Exception):
    pass


class KillAtSecondEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise Killed


def run(output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.output_dir={output_dir}", *overrides])
    return train(cfg)


def test_train_resume_continues_the_average_and_load_model_gives_it(tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "run"
    _, objects = run(ref_dir)
    ema = next(cb for cb in objects["trainer"].callbacks if isinstance(cb, WeightEMA))
    model, _ = load_model(ref_dir / "checkpoints" / "last.ckpt")
    assert all(torch.equal(v, ema.ema.module.state_dict()[k]) for k, v in model.state_dict().items())

    with pytest.raises(Killed):
        run(run_dir, f"+callbacks.killer._target_={__name__}.KillAtSecondEpoch")
    run(tmp_path / "unused", f"resume_from={run_dir}")
    ref, resumed = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (ref_dir, run_dir))
    assert ref["global_step"] == resumed["global_step"] == 8
    for key in ("state_dict", None):  # the EMA (model weights), then the training weights
        a = ref[key] if key else ref["callbacks"]["WeightEMA"]["training_weights"]
        b = resumed[key] if key else resumed["callbacks"]["WeightEMA"]["training_weights"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
    assert not all(torch.equal(ref["state_dict"]["model." + k], v)
                   for k, v in ref["callbacks"]["WeightEMA"]["training_weights"].items())
