"""data=webdataset: mmtrans-shards writes tar shards from our procedural sets, train.py trains
on them (classification and captioning), bad samples follow data.on_bad_image, and loader
workers read every sample once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mmtrans.data.bad_images import SKIPPED_KEY, BadSample
from mmtrans.data.io import BadImageError
from mmtrans.data.shards import INFO_FILE, webdataset_splits
from tasks.datamodule import DataModule
from tasks.shards_cli import main as shards_main
from train import train

ROOT = Path(__file__).resolve().parents[2]
VIT = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "trainer.accelerator=cpu", "trainer.devices=1",
       "callbacks.progress_bar.refresh_rate=0", "trainer.fast_dev_run=true"]


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_shards")
    args = [str(out), "task=classification", "data=shapes", "data.num_train=24", "data.num_val=8",
            "data.num_test=6", "data.img_size=16", "--samples-per-shard", "10"]
    assert shards_main(args) == 0
    return out


def compose_cfg(run: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={run}"])


def test_shards_are_written_per_split_with_their_description(shapes_shards: Path) -> None:
    info = json.loads((shapes_shards / INFO_FILE).read_text())
    assert sorted(p.name for p in shapes_shards.glob("*.tar")) == [
        "test-000000.tar", "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    assert info["splits"]["train"]["samples"] == 24 and info["classes"][:2] == ["circle", "square"]
    assert (info["img_size"], info["in_chans"]) == (16, 3)


def test_classification_trains_on_the_shards(shapes_shards: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path, "task=classification", "data=webdataset", f"data.root={shapes_shards}",
                      "data.batch_size=4", "model.patch_size=8", *VIT)
    metrics, objects = train(cfg)
    assert "test/acc" in metrics and objects["datamodule"].preprocessing.img_size == 16  # from shards.json
    assert objects["datamodule"].num_classes == 6


def test_captioning_trains_on_the_shards(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    assert shards_main([str(out), "task=captioning", "data=scenes", "data.num_train=8", "data.num_val=4",
                        "data.num_test=4", "data.img_size=32"]) == 0
    info = json.loads((out / INFO_FILE).read_text())
    assert info["splits"]["train"]["captions"] == 5 * 8 and info["classes"] == []
    cfg = compose_cfg(tmp_path / "run", "task=captioning", "data=webdataset", f"data.root={out}", "data.batch_size=4",
                      "model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
                      "task.tokenizer.vocab_size=120", "task.generation.max_new_tokens=4", "task.generation.num_beams=1",
                      *VIT)
    metrics, objects = train(cfg)
    assert "test/bleu4" in metrics
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert batch["tokens"].dtype == torch.long and batch["tokens"].shape == batch["padding_mask"].shape


def _bad_shards(folder: Path) -> Path:
    """A val shard: a good sample, one without .cls, one whose .jpg does not decode."""
    import webdataset as wds

    folder.mkdir()
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png, format="PNG")
    for split in ("train", "val"):
        with wds.TarWriter(str(folder / f"{split}-000000.tar")) as w:
            w.write({"__key__": "good", "png": png.getvalue(), "cls": b"1"})
            w.write({"__key__": "nolabel", "png": png.getvalue()})
            w.write({"__key__": "broken", "jpg": b"not a jpeg", "cls": b"0"})
    info = {"classes": ["a", "b"], "splits": {s: {"shards": [f"{s}-000000.tar"], "samples": 3, "captions": 0}
                                               for s in ("train", "val")}}
    (folder / INFO_FILE).write_text(json.dumps(info))
    return folder


def test_bad_samples_raise_or_are_skipped_naming_shard_and_key(tmp_path: Path) -> None:
    root = _bad_shards(tmp_path / "bad")
    with pytest.raises(BadImageError, match=r"val-000000.tar:nolabel.*no label"):
        list(webdataset_splits(str(root)).val)
    skipped = list(webdataset_splits(str(root), on_bad_image="skip").val)
    assert [type(x) for x in skipped] == [dict, BadSample, BadSample]
    assert "val-000000.tar:broken" in skipped[2].path and "does not decode" in skipped[2].reason
    train = webdataset_splits(str(root), on_bad_image="skip", batch_size=1).train
    items = list(train)  # endless stream cut to the epoch: the good sample, the bad ones reported on it
    assert len(items) == len(train) == 3 and all(int(x["label"]) == 1 for x in items)
    assert {b.path.rsplit(":", 1)[1] for x in items for b in x.get(SKIPPED_KEY, [])} == {"nolabel", "broken"}


def test_two_loader_workers_read_every_sample_once(shapes_shards: Path) -> None:
    dm = DataModule(webdataset_splits, root=str(shapes_shards), batch_size=4, num_workers=2, prefetch_factor=2)
    dm.setup("fit")
    ids = [i for batch in dm.val_dataloader() for i in batch["id"]]
    assert len(ids) == len(set(ids)) == 8
    train = dm.train_dataloader()
    batches = list(train)
    assert len(batches) == len(train) == 24 // 4 and all(b["image"].shape == (4, 3, 16, 16) for b in batches)


@pytest.mark.parametrize("readers", [2, 3, 5])  # 3 training shards: a shard each or samples modulo readers
def test_readers_share_a_pass_disjointly_whatever_their_seeds(shapes_shards: Path, readers: int) -> None:
    """DDP ranks x loader workers are readers with different random states (rank and worker go
    into their seeds); in every pass each training sample goes to exactly one of them."""
    import random

    train = webdataset_splits(str(shapes_shards), batch_size=4).train
    keys = [[s["__key__"] for s in train._samples(r, readers, random.Random(f"seed-{r}"))] for r in range(readers)]
    flat = [k for share in keys for k in share]
    assert len(flat) == len(set(flat)) == 24, [len(share) for share in keys]
