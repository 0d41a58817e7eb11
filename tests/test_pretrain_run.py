"""`train.py task=pretrain` end to end on a tiny MAE: checkpoints, reconstructions, and the
encoder taken by classification, medical and captioning runs (`model.pretrained=` /
`model.encoder_pretrained=`) at another image size and channel count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from mmtrans.models.pretrained import read_state_dict
from tasks.checkpoint import load_model
from train import train

ROOT = Path(__file__).resolve().parents[1]
ENCODER = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8"]
RUN = ["data.batch_size=16", "trainer.accelerator=cpu", "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0"]
TINY_DATA = ["data.num_train=64", "data.num_val=32", "data.num_test=16"]


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*ENCODER, *RUN, *TINY_DATA, f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("pretrain_run")
    cfg = compose_cfg(run, "task=pretrain", "data.img_size=32", "model.decoder_embed_dim=32",
                      "model.decoder_depth=1", "model.decoder_num_heads=2", "trainer.max_epochs=1")
    assert cfg.callbacks.model_checkpoint.mode == "min"  # val/loss: lower is better
    metrics, _ = train(cfg)
    return run, metrics


def test_pretrain_writes_checkpoints_samples_and_loss(pretrained):
    run, metrics = pretrained
    assert {"train/loss_epoch", "val/loss", "test/loss", "val/loss_best"} <= metrics.keys()
    assert (run / "checkpoints" / "last.ckpt").is_file() and Path(metrics["best_ckpt"]).is_file()
    samples = sorted((run / "samples").glob("*.png"))
    assert [s.name for s in samples] == ["epoch_000.png"]
    assert Image.open(samples[0]).size[0] > 8 * 32  # 8 val images side by side
    model, info = load_model(run / "checkpoints" / "last.ckpt")  # the checkpoint alone rebuilds the MAE
    assert type(model).__name__ == "MaskedAutoencoder" and info["config"]["task_name"] == "pretrain"


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        # 48 px: a 6x6 grid instead of 4x4 (position table resized).
        ("classification", ["task=classification", "data.img_size=48"]),
        # Grey 32 px scans with average pooling (the medical default): channels adapted,
        # the encoder's final norm becomes the head's.
        ("medical", ["task=medical", "data=medical_scans", "model.global_pool=avg", "task.bootstrap_samples=0",
                     "task.num_heatmaps=0"]),
        ("captioning", ["task=captioning", "data.img_size=48", "model.decoder_embed_dim=32", "model.decoder_depth=1",
                        "model.decoder_num_heads=2", "task.tokenizer.vocab_size=120",
                        "task.generation.max_new_tokens=4", "task.generation.num_beams=1"]),
    ],
)
def test_downstream_tasks_take_the_pretrained_encoder(pretrained, tmp_path, name, overrides):
    run, _ = pretrained
    ckpt = run / "checkpoints" / "last.ckpt"
    key = "model.encoder_pretrained" if name == "captioning" else "model.pretrained"
    cfg = compose_cfg(tmp_path, *overrides, f"{key}={ckpt}", "trainer.fast_dev_run=true")
    # Building the model loads the weights strictly: a missing or unexpected key raises.
    kwargs = {"vocab_size": 64} if name == "captioning" else {"num_classes": 2}
    model = instantiate(cfg.model, **kwargs, _convert_="all")
    mae = read_state_dict(ckpt)
    for k in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "cls_token"):
        torch.testing.assert_close(model.encoder.state_dict()[k], mae[f"encoder.{k}"])
    assert model.encoder.pos_embed.shape[1] == 1 + model.encoder.patch_embed.num_patches
    metrics, _ = train(cfg)  # and the task runs on it
    assert metrics


def test_encoder_of_another_size_is_refused_by_name(pretrained, tmp_path):
    run, _ = pretrained
    cfg = compose_cfg(tmp_path, "task=classification", "model.depth=2",
                      f"model.pretrained={run / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(Exception, match=r"depth 1 vs 2.*model.depth=1"):
        instantiate(cfg.model, num_classes=2, _convert_="all")


def test_exported_pretrain_folder_is_accepted(pretrained, tmp_path):
    from tasks.export import export

    run, _ = pretrained
    folder = export(run / "checkpoints" / "last.ckpt", tmp_path / "mae_export")
    cfg = compose_cfg(tmp_path / "run", "task=classification", f"model.pretrained={folder}")
    model = instantiate(cfg.model, num_classes=2, _convert_="all")
    mae = read_state_dict(run / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight, mae["encoder.blocks.0.attn.qkv.weight"])
    assert model.encoder.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # the export's normalisation
