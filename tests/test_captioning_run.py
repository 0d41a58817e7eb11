"""task=captioning end to end on tiny models and data: train.py, checkpoint, caption CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from tasks.caption_cli import main as caption_main
from tasks.checkpoint import load_model
from train import train

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k_1k"
TINY = [
    "task=captioning", "model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
    "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "data.batch_size=8", "trainer.accelerator=cpu",
    "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0", "task.tokenizer.vocab_size=120",
    "task.generation.max_new_tokens=8",
]
TINY_SCENES = ["data.img_size=32", "data.num_train=16", "data.num_val=8", "data.num_test=8"]
METRICS = {f"test/{m}" for m in ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l")}


def compose_cfg(output_dir: Path, *overrides: str, data=TINY_SCENES):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, *data, f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("caption_run")
    metrics, _ = train(compose_cfg(run, "trainer.max_epochs=1"))
    return run, metrics


def test_fit_test_writes_metrics_captions_and_tokenizer(trained):
    run, metrics = trained
    assert METRICS <= metrics.keys() and "val/cider_best" in metrics
    assert json.loads((run / "metrics.json").read_text()) == metrics
    captions = json.loads((run / "captions.json").read_text())  # COCO results format
    assert len(captions) == 8 and set(captions[0]) == {"image_id", "caption"}
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    grids = sorted((run / "samples").glob("*.png"))  # sample captions drawn under their images
    assert [g.name for g in grids] == ["test.png", "val_epoch000.png"]
    assert Image.open(grids[0]).size[0] == 3 * 160


def test_checkpoint_alone_rebuilds_model_and_tokenizer(trained):
    _, metrics = trained
    model, info = load_model(metrics["best_ckpt"])
    assert info["tokenizer"].vocab_size == model.decoder.vocab_size
    assert info["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_caption_cli_on_file_and_folder(trained, tmp_path, capsys):
    _, metrics = trained
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (50 + i, 40), (200, 30 * i, 0)).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "caps.json"
    code = caption_main([metrics["best_ckpt"], str(images), "--json", str(out), "--beams", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err  # unreadable image: named, exit non-zero
    rows = json.loads(out.read_text())
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.png", "2.png"]
    assert captured.out.count("\t") == 3
    assert caption_main([metrics["best_ckpt"], str(images / "0.png")]) == 0


def test_caption_cli_input_limits(trained, tmp_path, capsys):
    _, metrics = trained
    ckpt = metrics["best_ckpt"]
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert caption_main([ckpt, str(tmp_path / "big.png"), str(tmp_path / "notes.txt"), "--max-pixels", "50000"]) == 1
    err = capsys.readouterr().err
    assert "big.png: 300x200 = 60,000 pixels is over the limit of 50,000" in err
    assert "notes.txt: not an image in a format PIL can decode" in err
    (tmp_path / "empty").mkdir()
    assert caption_main([ckpt, str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "drawing.svg").write_text("<svg/>")  # not an image suffix: not listed
    assert caption_main([ckpt, str(tmp_path / "other")]) == 2
    # A file name that is not UTF-8: captioned, and printed with the byte escaped.
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(os.path.join(odd, os.fsdecode(b"caf\xe9.png")))
    assert caption_main([ckpt, str(odd), "--json", str(tmp_path / "odd.json")]) == 0
    assert "caf\\xe9.png\t" in capsys.readouterr().out
    assert json.loads((tmp_path / "odd.json").read_text())[0]["image"].endswith("caf\\xe9.png")


def test_caption_cli_streams_a_folder_of_10000_files(trained, tmp_path, monkeypatch, capsys):
    """Files are listed as they are captioned: when the first batch is captioned, only that
    batch has been read from the folder listing (memory does not grow with the folder)."""
    import tasks.caption_cli as cli

    _, metrics = trained
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (50, 60, 70)).save(buf, "PNG")
    for i in range(10_000):
        sub = tmp_path / "many" / f"{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:05d}.png").write_bytes(buf.getvalue())
    listed, listed_at_call = 0, []
    real_listing = cli.iter_image_files

    def counting(folder):
        nonlocal listed
        for f in real_listing(folder):
            listed += 1
            yield f

    monkeypatch.setattr(cli, "iter_image_files", counting)

    def fake_captions(model, tokenizer, images, **kwargs):  # the model is not what is tested here
        listed_at_call.append(listed)
        return ["a caption"] * len(images)

    monkeypatch.setattr(cli, "caption_images", fake_captions)
    assert cli.main([metrics["best_ckpt"], str(tmp_path / "many"), "--batch-size", "256"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10_000 and out[0].endswith("00000.png\ta caption")
    assert listed_at_call[0] == 256 and len(listed_at_call) == 40


def test_caption_cli_missing_checkpoint_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tasks.caption_cli", str(tmp_path / "none.ckpt"), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "none.ckpt" in proc.stderr


def test_caption_table_data_through_the_config(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(10):
        Image.new("RGB", (30 + 3 * i, 24), (20 * i, 100, 50)).save(images / f"{i}.jpg")
        rows += [{"image": f"{i}.jpg", "caption": f"a picture number {i}"}, {"image": f"{i}.jpg", "caption": "a box"}]
    table = tmp_path / "captions.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(rows)
    data = ["data=caption_table", f"data.root={images}", f"data.annotations={table}", "data.img_size=32",
            "data.batch_size=4", "data.val_fraction=0.2", "data.test_fraction=0.2"]
    metrics, objects = train(compose_cfg(tmp_path / "run", "trainer.fast_dev_run=true", "task.max_len=5",
                                         "task.generation.max_new_tokens=4", data=data))
    assert METRICS <= metrics.keys()
    assert len(objects["datamodule"].splits.train) == 12  # 6 images x 2 captions, split by image
    # "a picture number i" needs 6 tokens with bos/eos: some of the 4 captions are cut and counted
    assert 1 <= metrics["train/truncated_captions"] <= 4


@pytest.mark.skipif(not FLICKR.is_dir(), reason=f"real captions not found at {FLICKR}")
def test_real_flickr_photos_of_any_size(tmp_path):
    data = ["data=caption_table", f"data.root={FLICKR / 'images'}", f"data.annotations={FLICKR / 'captions.txt'}",
            "data.img_size=32", "data.batch_size=4"]
    metrics, _ = train(compose_cfg(tmp_path, "trainer.fast_dev_run=true", data=data))
    assert 0.0 <= metrics["test/bleu4"] <= 1.0
