"""mmtrans-export: a checkpoint becomes safetensors + JSON that rebuild the same model, with
no pickle anywhere on the way back in."""

from __future__ import annotations

import contextlib
import json
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from tasks.caption_cli import main as caption_main
from tasks.checkpoint import load_model
from tasks.export import main as export_main
from train import train

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["trainer.accelerator=cpu", "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0",
          "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
CLASSIFICATION = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "data.img_size=32",
                  "data.batch_size=16", "data.num_train=32", "data.num_val=16"]
CAPTIONING = ["task=captioning", "model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
              "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "data.batch_size=8", "data.img_size=32",
              "data.num_train=16", "data.num_val=8", "task.tokenizer.vocab_size=120",
              "task.generation.max_new_tokens=6", "task.generation.num_beams=2"]


def trained_checkpoint(run_dir: Path, overrides: list[str]) -> Path:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, *overrides, f"paths.output_dir={run_dir}"])
    metrics, _ = train(cfg)
    return Path(metrics["best_ckpt"])


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("cls"), CLASSIFICATION)


@pytest.fixture(scope="module")
def captioner_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("cap"), CAPTIONING)


@contextlib.contextmanager
def unpickling_refused() -> Iterator[None]:
    """Any torch.load or unpickling inside the block fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("an exported folder must load without unpickling anything")

    with pytest.MonkeyPatch.context() as mp:
        for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
            mp.setattr(module, name, refuse)
        yield


def export(ckpt: Path, out: Path) -> Path:
    assert export_main([str(ckpt), str(out)]) == 0
    return out


def test_classifier_export_gives_identical_outputs(classifier_ckpt: Path, tmp_path: Path) -> None:
    out = export(classifier_ckpt, tmp_path / "export")
    ref_model, ref_info = load_model(classifier_ckpt)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    with unpickling_refused():
        model, info = load_model(out)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), ref_model(x))
    for key in ("num_classes", "label_type", "class_names"):
        assert info[key] == ref_info[key]
    config = json.loads((out / "config.json").read_text())
    assert config["format_version"] == 2 and config["task"] == "classification"
    assert config["preprocessing"] == info["preprocessing"] == ref_info["preprocessing"] == {
        "img_size": 32, "in_chans": 3, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 1.0}


def test_captioner_export_keeps_tied_head_and_captions(captioner_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = export(captioner_ckpt, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens.json", "tokenizer.json"]
    ref_model, ref_info = load_model(captioner_ckpt)
    with unpickling_refused():
        model, info = load_model(out)
    decoder = model.decoder
    assert decoder.lm_head.weight.data_ptr() == decoder.tok_embed.weight.data_ptr()  # still tied
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, decoder.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(images, tokens), ref_model(images, tokens))
    assert info["tokenizer"].to_json() == ref_info["tokenizer"].to_json()
    assert info["generation"] == ref_info["generation"] and info["generation"]["num_beams"] == 2
    assert info["preprocessing"] == ref_info["preprocessing"]

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 40, 0)).save(image)
    capsys.readouterr()
    assert caption_main([str(captioner_ckpt), str(image)]) == 0
    from_ckpt = capsys.readouterr().out
    assert caption_main([str(out), str(image)]) == 0
    assert capsys.readouterr().out == from_ckpt and from_ckpt.startswith(f"{image}\t")


def test_safetensors_file_is_only_a_header_and_raw_tensors(classifier_ckpt: Path, tmp_path: Path) -> None:
    """The format has no room for pickle: 8 bytes of header size, a JSON header, then the
    tensors' bytes at the offsets the header gives, and nothing else."""
    data = (export(classifier_ckpt, tmp_path / "export") / "model.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    assert 8 + size + max(ends) == len(data)


def test_non_empty_out_dir_is_refused_unless_force(classifier_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "tokenizer.json").write_text("{}")  # from an earlier export of a captioner
    assert export_main([str(classifier_ckpt), str(out)]) == 2
    assert f"{out} is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "tokenizer.json"]  # untouched
    assert export_main([str(classifier_ckpt), str(out), "--force"]) == 0
    # --force replaces the export's own files (no stale tokenizer) and keeps the rest
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    assert load_model(out)[1]["class_names"]

