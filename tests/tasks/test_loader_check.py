"""callbacks.loader_check: one warning when the model waits for its batches, none when the
data keeps up; auto is off on the CPU."""

from __future__ import annotations

import time

import pytest
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.loader_check import LoaderCheck


class Images(Dataset):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.delay_s)  # a slow decode or augmentation
        return {"image": torch.randn(3, 8, 8), "label": i % 2}


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3 * 8 * 8, 2)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        time.sleep(0.02)  # a step of 20 ms
        return torch.nn.functional.cross_entropy(self.net(batch["image"].flatten(1)), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(delay_s: float, enabled: bool | str = True) -> LoaderCheck:
    check = LoaderCheck(enabled=enabled, steps=5, skip=1)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=10, callbacks=[check], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), DataLoader(Images(delay_s), batch_size=4))
    return check


def test_a_slow_loader_gets_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    check = fit(delay_s=0.01)  # 40 ms per batch of 4 against a 20 ms step
    lines = [line for line in capsys.readouterr().out.splitlines() if "loader_check" in line]
    assert lines == [check.warning] and len(check.step_s) == 5
    assert "the data loader is the bottleneck" in lines[0] and "images/s" in lines[0]
    assert "data.num_workers" in lines[0]


def test_a_fast_loader_gets_none(capsys: pytest.CaptureFixture[str]) -> None:
    check = fit(delay_s=0.0)
    assert check.warning is None and len(check.step_s) == 5
    assert "loader_check" not in capsys.readouterr().out


def test_auto_is_off_on_the_cpu() -> None:
    check = fit(delay_s=0.01, enabled="auto")
    assert check.warning is None and check.step_s == []
    with pytest.raises(ValueError, match="callbacks.loader_check.enabled must be true, false or auto"):
        LoaderCheck(enabled="sometimes")
