"""Hostile and broken inputs, made on the fly.

Images, in every data set type that reads files: each odd-but-valid image must load (RGB,
right orientation); each broken one must raise `BadImageError` naming the file with
`data.on_bad_image=raise`, and be left out, counted and listed with `skip` — per sample in
the loaders, and up front with `data.validate=true`. Annotations: broken ones stop train.py
before training with a message naming file and place. Elsewhere: the caption CLI's input
limits (tests/test_captioning_run.py), SIGKILL and resume (tests/test_sigkill_resume.py),
pickled code (tests/test_malicious_checkpoint.py), NaN (tests/tasks/test_nan_guard.py),
repeatability (tests/test_reproducibility.py), an unwritable run folder
(tests/tasks/test_run_dir.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mmtrans.data.bad_images import SKIPPED_KEY, SkipBadImages, SkippingCollate, find_bad_images
from mmtrans.data.captions import CaptionDataset, collate_captions, read_captions
from mmtrans.data.image_folder import ImageFolderDataset, find_images, image_folder_splits
from mmtrans.data.io import BadImageError, load_image
from mmtrans.data.medical_csv import medical_csv_splits
from mmtrans.data.transforms import build_transform
from tests.test_train import TINY as TRAIN_TINY
from train import train

ROOT = Path(__file__).resolve().parents[1]
# A file name that is not UTF-8 (Latin-1 "café"): Python keeps the byte as a lone surrogate.
NON_UTF8 = os.fsdecode(b"caf\xe9.png")
BROKEN = ("truncated.jpg", "empty.png", "text.png")


def _rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _exif_rotated(path: Path) -> None:
    """A 40x20 (w x h) JPEG whose EXIF says "rotate 90 CW": it displays as 20x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    _rgb(40, 20).save(path, exif=exif.tobytes())


def write_hostile_images(folder: Path) -> dict[str, str]:
    """Every odd and broken case in `folder`; returns name -> "ok" or "bad"."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    _rgb(64, 64).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is a text file named like an image\n")
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(folder / "palette_transparent.png", transparency=0)
    Image.new("RGBA", (16, 16), (0, 255, 0, 128)).save(folder / "rgba.png")
    grey16 = Image.fromarray(np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16))
    grey16.save(folder / "grey16.png")
    grey16.save(folder / "grey16.tif")
    _exif_rotated(folder / "exif_rotated.jpg")
    _rgb(1, 1).save(folder / "one_pixel.png")
    _rgb(20, 20, seed=1).save(folder / NON_UTF8)
    kinds = {name: "bad" for name in BROKEN}
    ok = ["cmyk.jpg", "palette_transparent.png", "rgba.png", "grey16.png", "grey16.tif", "exif_rotated.jpg",
          "one_pixel.png", NON_UTF8]
    kinds.update(dict.fromkeys(ok, "ok"))
    return kinds


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, write_hostile_images(folder)


# -- the loader itself ----------------------------------------------------------------------

def test_every_odd_image_loads_as_rgb_and_every_broken_one_names_its_file(hostile) -> None:
    folder, kinds = hostile
    for name, kind in kinds.items():
        if kind == "ok":
            img = load_image(folder / name)
            assert img.mode == "RGB", name
            continue
        with pytest.raises(BadImageError) as info:
            load_image(folder / name)
        assert info.value.path == str(folder / name)
        assert name in str(info.value) and info.value.reason, str(info.value)


def test_details_of_the_odd_images(hostile) -> None:
    folder, _ = hostile
    assert load_image(folder / "exif_rotated.jpg").size == (20, 40)  # transposed as EXIF says
    assert load_image(folder / "one_pixel.png").size == (1, 1)
    assert np.asarray(load_image(folder / "rgba.png"))[0, 0].tolist() == [0, 255, 0]  # alpha dropped
    assert np.asarray(load_image(folder / "palette_transparent.png"))[0, 0].tolist() == [255, 0, 0]
    grey = np.asarray(load_image(folder / "grey16.png", "L"))
    assert grey.min() == 0 and grey.max() == 255  # 12-bit values stretched, not clipped at 255
    cmyk = np.asarray(load_image(folder / "cmyk.jpg"))
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1:].mean() < 60  # C=0, M=Y=255: red


def test_truncated_jpeg_reason_is_the_decoders(hostile) -> None:
    with pytest.raises(BadImageError, match=r"truncated\.jpg: .*truncated"):
        load_image(hostile[0] / "truncated.jpg")


def test_huge_image_decodes_within_pils_limit_and_a_lower_limit_refuses_it(tmp_path: Path) -> None:
    Image.new("L", (10_000, 10_000), 7).save(tmp_path / "huge.png")
    assert load_image(tmp_path / "huge.png", "L").size == (10_000, 10_000)  # 100 MP < PIL's 179 MP
    with pytest.raises(BadImageError, match=r"huge\.png: 10000x10000 = 100,000,000 pixels is over the limit of 1,000,000"):
        load_image(tmp_path / "huge.png", max_pixels=1_000_000)
    # Past PIL's own limit: its "decompression bomb" refusal, named like any bad file.
    Image.new("1", (20_000, 10_000)).save(tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match=r"bomb\.png: .*decompression bomb"):
        load_image(tmp_path / "bomb.png", max_pixels=None)


# -- each data set type ---------------------------------------------------------------------

TRANSFORM = build_transform(16, train=False, mean=(0.5,) * 3, std=(0.5,) * 3)


def _image_folder(folder: Path, tmp: Path):
    # Every file, as the folder listing finds it (the non-UTF-8 name included), in one class.
    return ImageFolderDataset([(f, 0) for f in find_images(folder)], ["all"], TRANSFORM)


def _captions(folder: Path, tmp: Path):
    # CSV files hold text: a non-UTF-8 file name cannot be written into one, so it is left out.
    table = tmp / "captions.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for name in sorted(os.listdir(folder)):
            if name != NON_UTF8:
                writer.writerow([name, f"a picture called {name}"])
    return CaptionDataset(read_captions("table", table, folder), TRANSFORM, mode="images")


def _medical_csv(folder: Path, tmp: Path):
    table = tmp / "labels.csv"
    names = [n for n in sorted(os.listdir(folder)) if n != NON_UTF8]
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i, name in enumerate(names):
            writer.writerow([name, i % 2, "val"])
        writer.writerow([names[0], 0, "train"])
    return medical_csv_splits(table, root=folder, split_column="split", eval_transform=TRANSFORM).val


DATASETS = {"image_folder": _image_folder, "captions": _captions, "medical_csv": _medical_csv}


def _name(path: str) -> str:
    return os.path.basename(path)


@pytest.mark.parametrize("kind", DATASETS)
def test_raise_policy_names_the_broken_file_and_loads_the_rest(hostile, tmp_path: Path, kind: str) -> None:
    folder, kinds = hostile
    dataset = DATASETS[kind](folder, tmp_path)
    files = dataset.image_files()
    assert {_name(f) for f in files} >= set(BROKEN)
    assert kind != "image_folder" or NON_UTF8 in {_name(f) for f in files}
    for i in range(len(dataset)):
        name = _name(files[i])
        if kinds[name] == "bad":
            with pytest.raises(BadImageError, match=name.replace(".", r"\.")):
                dataset[i]
        else:
            assert dataset[i]["image"].shape == (3, 16, 16), name


@pytest.mark.parametrize("kind", DATASETS)
def test_skip_policy_drops_counts_and_lists_the_broken_files(hostile, tmp_path: Path, kind: str) -> None:
    folder, kinds = hostile
    dataset = DATASETS[kind](folder, tmp_path)
    n_bad = sum(kinds[_name(f)] == "bad" for f in dataset.image_files())
    batch = SkippingCollate(collate_captions if kind == "captions" else None)(
        [SkipBadImages(dataset, replace=False)[i] for i in range(len(dataset))]
    )
    assert len(batch["image"]) == len(dataset) - n_bad
    assert sorted(_name(s["path"]) for s in batch[SKIPPED_KEY]) == sorted(
        _name(f) for f in dataset.image_files() if kinds[_name(f)] == "bad"
    )
    assert all(s["reason"] for s in batch[SKIPPED_KEY])
    # Up front: the same files, found without a loader.
    assert sorted(_name(b.path) for b in find_bad_images(dataset)) == sorted(_name(s["path"]) for s in batch[SKIPPED_KEY])
    kept = dataset.without_files({b.path for b in find_bad_images(dataset)})
    assert len(kept) == len(dataset) - n_bad and find_bad_images(kept) == []


def test_training_replaces_a_bad_sample_with_the_next_readable_one(hostile, tmp_path: Path) -> None:
    folder, kinds = hostile
    dataset = _image_folder(folder, tmp_path)
    files = dataset.image_files()
    bad = next(i for i, f in enumerate(files) if kinds[_name(f)] == "bad")
    item = SkipBadImages(dataset, replace=True)[bad]
    assert item["image"].shape == (3, 16, 16)
    assert [_name(s.path) for s in item[SKIPPED_KEY]] == [_name(files[bad])]
    assert kinds[_name(item["id"])] == "ok"


def test_a_split_with_no_readable_image_is_an_error_not_a_loop(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"")
    dataset = image_folder_splits(tmp_path, val_fraction=0.0, test_fraction=0.0).train
    with pytest.raises(BadImageError, match="no sample of this split of 2 can be read"):
        SkipBadImages(dataset, replace=True)[0]


def test_an_all_bad_eval_batch_is_empty_and_listed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.png").write_bytes(b"")
    dataset = image_folder_splits(tmp_path, val_fraction=0.0, test_fraction=0.0).train
    batch = SkippingCollate()([SkipBadImages(dataset, replace=False)[i] for i in range(2)])
    assert batch["image"].numel() == 0 and len(batch[SKIPPED_KEY]) == 2


# -- through train.py -----------------------------------------------------------------------

# test_train's tiny ViT, with batches of 4 over 2 epochs.
TINY = [*(o for o in TRAIN_TINY if not o.startswith("data.batch_size=")), "data.batch_size=4", "trainer.max_epochs=2"]


def _folder_run(tmp_path: Path, root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=classification", "data=imagefolder", f"data.root={root}", "model=vit_tiny", *TINY,
            f"paths.output_dir={tmp_path / 'run'}", *overrides,
        ])
    return train(cfg)


@pytest.fixture(scope="module")
def folder_with_bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of 8 good images, plus the broken ones in train (class a) and val (class b)."""
    root = tmp_path_factory.mktemp("bad_tree")
    for c, cls in enumerate(("a", "b")):
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
        for i in range(8):
            _rgb(32, 32, seed=10 * c + i).save(root / "train" / cls / f"{i}.png")
        for i in range(3):
            _rgb(32, 32, seed=100 + 10 * c + i).save(root / "val" / cls / f"{i}.png")
    (root / "train" / "a" / "empty.png").write_bytes(b"")
    (root / "train" / "a" / "text.png").write_text("not an image")
    (root / "val" / "b" / "zz_empty.png").write_bytes(b"")
    return root


def test_run_with_raise_stops_naming_the_file(tmp_path: Path, folder_with_bad_files: Path) -> None:
    with pytest.raises(BadImageError, match=r"cannot read image .*(empty|text)\.png"):
        _folder_run(tmp_path, folder_with_bad_files)


def test_run_with_skip_finishes_and_reports_per_epoch(tmp_path: Path, folder_with_bad_files: Path, capsys) -> None:
    metrics, _ = _folder_run(tmp_path, folder_with_bad_files, "data.on_bad_image=skip")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Per epoch: 2 bad of 18 train samples, 1 bad of 7 val samples (and of the test = val split).
    assert saved["train/skipped_images"] == 2 and saved["val/skipped_images"] == 1
    assert saved["test/skipped_images"] == 1
    assert saved["data/skipped_images"] == 2 * 2 + 2 * 1 + 1  # 2 epochs of train and val, 1 test
    report = json.loads((tmp_path / "run" / "bad_images.json").read_text())
    names = sorted({_name(e["path"]) for e in report["skipped_while_loading"]})
    assert names == ["empty.png", "text.png", "zz_empty.png"]
    assert "left out in epoch 1" in capsys.readouterr().out
    assert metrics["val/skipped_images"] == 1


def test_validate_lists_every_bad_file_before_training(tmp_path: Path, folder_with_bad_files: Path) -> None:
    with pytest.raises(ValueError, match=r"3 of 25 image files cannot be read") as info:
        _folder_run(tmp_path, folder_with_bad_files, "data.validate=true")
    for name in ("empty.png", "text.png", "zz_empty.png"):
        assert name in str(info.value)
    assert "data.on_bad_image=skip" in str(info.value)


def test_validate_with_skip_leaves_bad_files_out_up_front(tmp_path: Path, folder_with_bad_files: Path) -> None:
    metrics, objects = _folder_run(
        tmp_path, folder_with_bad_files, "data.validate=true", "data.on_bad_image=skip", "trainer.max_epochs=1"
    )
    assert metrics["data/invalid_images"] == 3 and metrics["data/skipped_images"] == 0
    assert len(objects["datamodule"].splits.train) == 16
    report = json.loads((tmp_path / "run" / "bad_images.json").read_text())
    assert {e["split"] for e in report["found_by_validate"]} == {"train", "val"}


def test_validate_on_generated_data_says_there_is_nothing_to_check(tmp_path: Path, capsys) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=classification", *TINY, "data.num_train=8", "data.num_val=4",
            "data.num_test=4", "trainer.fast_dev_run=1", "data.validate=true",
            f"paths.output_dir={tmp_path}",
        ])
    train(cfg)
    assert "no image files to check" in capsys.readouterr().out


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    from tasks.datamodule import DataModule

    with pytest.raises(ValueError, match="data.on_bad_image must be one of"):
        DataModule(splits=lambda **_: None, on_bad_image="ignore")


def test_skipped_batches_survive_worker_processes(folder_with_bad_files: Path) -> None:
    """The skipped list rides with the batch out of a worker (no shared counters)."""
    dataset = image_folder_splits(folder_with_bad_files, eval_transform=TRANSFORM).val
    loader = torch.utils.data.DataLoader(
        SkipBadImages(dataset, replace=False), batch_size=8, num_workers=1, collate_fn=SkippingCollate()
    )
    skipped = [s for batch in loader for s in batch[SKIPPED_KEY]]
    assert [_name(s["path"]) for s in skipped] == ["zz_empty.png"]


def _table_with_bad_images(tmp_path: Path, header: list[str], row) -> tuple[Path, Path]:
    """Images 0-5 train, 6-7 val, 8-9 test, good ones plus an empty file in each split;
    `row(name, i, split)` gives the CSV row."""
    images = tmp_path / "images"
    images.mkdir()
    table = tmp_path / "table.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(10):
            split = "train" if i < 6 else "val" if i < 8 else "test"
            _rgb(32, 32, seed=i).save(images / f"{i}.png")
            writer.writerow(row(f"{i}.png", i, split))
        for split in ("train", "val", "test"):
            (images / f"bad_{split}.png").write_bytes(b"")
            writer.writerow(row(f"bad_{split}.png", 0, split))
    return table, images


def test_captioning_run_skips_bad_images_including_an_all_bad_eval_batch(tmp_path: Path) -> None:
    from tests.test_captioning_run import TINY as CAPTION_TINY

    table, images = _table_with_bad_images(
        tmp_path, ["image", "caption", "split"], lambda name, i, split: [name, f"shape number {i % 3}", split]
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            *CAPTION_TINY, "data=caption_table", f"data.root={images}", f"data.annotations={table}",
            "data.img_size=32", "data.batch_size=2", "data.eval_batch_size=1", "trainer.max_epochs=1",
            "task.max_len=5", "data.on_bad_image=skip", f"paths.output_dir={tmp_path / 'run'}",
        ])
    metrics, _ = train(cfg)
    assert metrics["train/skipped_images"] == 1 and metrics["val/skipped_images"] == 1
    assert metrics["test/skipped_images"] == 1
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    assert sorted(c["image_id"] for c in captions) == ["8.png", "9.png"]  # the readable test images


def test_medical_csv_run_skips_bad_images(tmp_path: Path) -> None:
    table, images = _table_with_bad_images(
        tmp_path, ["path", "label", "split"], lambda name, i, split: [name, i % 2, split]
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=medical", "data=medical_csv", f"data.annotations={table}", f"data.root={images}",
            "data.split_column=split", *TINY, "data.eval_batch_size=1", "trainer.max_epochs=1",
            "data.drop_last=false", "data.on_bad_image=skip", "task.bootstrap_samples=20", f"paths.output_dir={tmp_path / 'run'}",
        ])
    metrics, _ = train(cfg)
    assert metrics["test/skipped_images"] == 1 and metrics["data/skipped_images"] == 3
    assert "test/auc" in metrics


# -- broken annotations: a clear message through train.py, before any training ---------------

def _broken_annotations(tmp_path: Path, case: str) -> list[str]:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        _rgb(16, 16, seed=i).save(images / f"{i}.png")
    if case == "json_syntax":
        (tmp_path / "captions.json").write_text('{"images": [\n  {"id": 1, "file_name": "0.png",}\n]}')
        return ["task=captioning", "data=coco", f"data.annotations={tmp_path / 'captions.json'}", f"data.root={images}"]
    if case == "json_missing_key":
        (tmp_path / "captions.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "0.png"}]}))
        return ["task=captioning", "data=coco", f"data.annotations={tmp_path / 'captions.json'}", f"data.root={images}"]
    if case == "duplicate_id":
        entries = [{"id": 1, "file_name": "0.png"}, {"id": 1, "file_name": "1.png"}]
        anns = [{"id": 1, "image_id": 1, "caption": "a thing"}]
        (tmp_path / "captions.json").write_text(json.dumps({"images": entries, "annotations": anns}))
        return ["task=captioning", "data=coco", f"data.annotations={tmp_path / 'captions.json'}", f"data.root={images}"]
    rows = {"label_outside": [("0.png", 0), ("1.png", 1), ("2.png", 5)], "empty_split": [(f"{i}.png", i % 2) for i in range(4)]}
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for n, (name, label) in enumerate(rows[case]):
            writer.writerow([name, label, "train" if case == "empty_split" or n < 2 else "val"])
    extra = ["data.label_type=ordinal", "data.class_names=[none,mild,severe]"] if case == "label_outside" else []
    return ["task=medical", "data=medical_csv", f"data.annotations={tmp_path / 'labels.csv'}", f"data.root={images}",
            "data.split_column=split", *extra]


@pytest.mark.parametrize("case, error, message", [
    ("json_syntax", ValueError, r"captions\.json is not valid JSON: line 2 column \d+"),
    ("json_missing_key", ValueError, r"captions\.json: the top level has no key 'annotations'"),
    ("duplicate_id", ValueError, r"captions\.json: images\[1\] repeats image id 1"),
    ("label_outside", ValueError, r"labels\.csv row 4, column 'label': label 5 is outside 0\.\.2"),
    ("empty_split", ValueError, r"labels\.csv: column 'split' has no 'val' rows"),
])
def test_broken_annotations_stop_before_training(tmp_path: Path, case: str, error: type, message: str) -> None:
    overrides = _broken_annotations(tmp_path, case)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "trainer.accelerator=cpu", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
