"""trainer=gpu / trainer=ddp: the settings a GPU run gets, composed from the real config; the
one-line error without CUDA; data.num_workers=auto resolved from the cores and processes."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tasks import datamodule as dm_module
from tasks.config_check import check_config
from tasks.datamodule import DataModule, resolve_num_workers

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.output_dir=/tmp/run", *overrides])


@pytest.mark.parametrize("trainer,devices", [("gpu", 1), ("ddp", 2)])
def test_gpu_trainers_compose_to_the_fast_settings(trainer: str, devices: int) -> None:
    cfg = compose_cfg(f"trainer={trainer}")
    t, d = cfg.trainer, cfg.data
    assert (t.accelerator, t.devices, t.precision, t.matmul_precision) == ("gpu", devices, "bf16-mixed", "high")
    assert (d.num_workers, d.pin_memory, d.persistent_workers, d.prefetch_factor) == ("auto", None, True, 4)
    check_config(cfg)  # matmul_precision is accepted though no Trainer argument
    cpu = compose_cfg("trainer=cpu").trainer
    assert (cpu.precision, cpu.matmul_precision) == ("32-true", None)


def test_config_check_names_a_bad_matmul_precision() -> None:
    with pytest.raises(ValueError, match=r"trainer.matmul_precision='fast': expected one of None, highest"):
        check_config(compose_cfg("trainer.matmul_precision=fast"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_trainer_gpu_without_cuda_fails_in_one_line(tmp_path: Path) -> None:
    from train import train

    with pytest.raises(RuntimeError) as err:
        train(compose_cfg("trainer=gpu", f"paths.output_dir={tmp_path}"))
    message = str(err.value)
    assert "\n" not in message and "no CUDA GPU" in message and "trainer=cpu" in message
    assert not (tmp_path / "metrics.json").exists()


def test_num_workers_auto_from_cores_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm_module, "available_cpus", lambda: 24)
    assert resolve_num_workers("auto", on_gpu=True, processes=1) == 8  # capped
    assert resolve_num_workers("auto", on_gpu=True, processes=4) == 6  # 24 cores over 4 processes
    assert resolve_num_workers("auto", on_gpu=False, processes=1) == 0  # CPU training: none
    assert resolve_num_workers(0, on_gpu=True) == 0 and resolve_num_workers(3, on_gpu=False) == 3
    monkeypatch.setattr(dm_module, "available_cpus", lambda: 2)
    assert resolve_num_workers("auto", on_gpu=True, processes=4) == 1  # at least one
    with pytest.raises(ValueError, match="data.num_workers must be auto or an integer"):
        DataModule(lambda **kw: None, num_workers="many")


def test_datamodule_resolves_auto_from_its_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm_module, "available_cpus", lambda: 16)
    dm = DataModule(lambda **kw: None, img_size=16)
    for device, processes, workers in (("cuda", 2, 8), ("cuda", 4, 4), ("cpu", 2, 0)):
        dm.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=torch.device(device)),
                                           num_devices=processes)
        assert (dm.num_workers, dm.pin_memory) == (workers, device == "cuda")
