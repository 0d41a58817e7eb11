"""A checkpoint that runs code when unpickled is refused at every entry point that reads one,
with a message naming the file, and its code never runs.

The payload creates a file when unpickled (`Path.touch`), so "the code did not run" is
checked by that file not existing; `test_the_payload_is_real` proves it would run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as L
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mmtrans.models import create_gpt2_decoder
from tasks.caption_cli import main as caption_main
from tasks.checkpoint import load_model
from tasks.checkpoint_io import AtomicCheckpointIO
from tasks.export import main as export_main
from train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "data.img_size=32",
        "data.batch_size=16", "data.num_train=32", "data.num_val=16", "data.num_test=16",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]


class Payload:
    """Stands for any code in a pickle: unpickling it calls `Path.touch(target)`."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def write_evil_checkpoint(path: Path, target: Path) -> Path:
    """Shaped like a Lightning checkpoint of a classifier; the payload hides in its hparams."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "epoch": 0, "global_step": 1, "pytorch-lightning_version": L.__version__,
        "state_dict": {"model.head.fc.weight": torch.zeros(8, 32), "model.head.fc.bias": torch.zeros(8)},
        "hyper_parameters": {"num_classes": 8, "class_names": [str(i) for i in range(8)], "lr": Payload(target)},
        "optimizer_states": [], "lr_schedulers": [], "callbacks": {},
    }, path)
    return path


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    return write_evil_checkpoint(tmp_path / "evil.ckpt", tmp_path / "pwned")


@pytest.fixture(autouse=True)
def payload_never_runs(tmp_path: Path):
    yield
    assert not (tmp_path / "pwned").exists(), "the checkpoint's code ran"


def refusal(path: Path) -> str:
    """What every entry point says: the file, and that it was refused for holding code."""
    return re.escape(str(path)) + r" refused: it is not weights-only, it holds pickled code"


def compose_cfg(output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"paths.output_dir={output_dir}", *overrides])


def test_the_payload_is_real(evil: Path, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    torch.load(evil, weights_only=False)  # what an unguarded loader does
    assert target.exists()
    target.unlink()


@pytest.mark.parametrize("mode", ["train=false", "train=true"])  # evaluate it, or fine-tune from it
def test_train_ckpt_path(evil: Path, tmp_path: Path, mode: str) -> None:
    with pytest.raises(ValueError, match=refusal(evil)):
        train(compose_cfg(tmp_path / "run", mode, f"ckpt_path={evil}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_resume_from(tmp_path: Path) -> None:
    last = write_evil_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt", tmp_path / "pwned")
    with pytest.raises(ValueError, match=refusal(last)):
        train(compose_cfg(tmp_path / "new", f"resume_from={tmp_path / 'killed'}"))


def test_train_model_pretrained(evil: Path, tmp_path: Path) -> None:
    # Refused where it is first read: its recorded preprocessing, before any data set is built.
    with pytest.raises(ValueError, match=refusal(evil)):
        train(compose_cfg(tmp_path / "run", f"model.pretrained={evil}"))


def test_gpt2_decoder_folder(tmp_path: Path) -> None:
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    folder.mkdir()
    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8).to_json_file(str(folder / "config.json"))
    weights = write_evil_checkpoint(folder / "pytorch_model.bin", tmp_path / "pwned")
    with pytest.raises(ValueError, match=refusal(weights)):
        create_gpt2_decoder(str(folder), cross_attention=True)


def test_load_model(evil: Path) -> None:
    with pytest.raises(ValueError, match=refusal(evil)):
        load_model(evil)


def test_lightning_checkpoint_io(evil: Path) -> None:
    """What Lightning itself reads with (ckpt_path=last / best resolve to a file only there)."""
    with pytest.raises(ValueError, match=refusal(evil)):
        AtomicCheckpointIO().load_checkpoint(evil)


def test_caption_cli(evil: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert caption_main([str(evil), str(image)]) == 2
    assert re.search(refusal(evil), capsys.readouterr().err)


def test_export_cli(evil: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_main([str(evil), str(tmp_path / "out")]) == 2
    assert re.search(refusal(evil), capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
