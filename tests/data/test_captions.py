import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmtrans.data.caption_formats import read_caption_table, read_coco, read_flickr8k, read_karpathy
from mmtrans.data.captions import CaptionDataset, caption_splits, collate_captions, split_by_image

FLICKR_1K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flickr8k_1k"
CAPS = {
    "a.png": ["a red image", "something red"],
    "b.png": ["a green image", "green", "a green square"],
    "c.png": ["a blue image", "blue thing"],
}


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(CAPS):
        pixels = np.zeros((8, 8, 3), dtype=np.uint8)
        pixels[..., i] = 255
        Image.fromarray(pixels).save(folder / name)
    return folder


def write_coco(path: Path, caps=CAPS) -> Path:
    images = [{"id": i, "file_name": name} for i, name in enumerate(caps)]
    annotations = [
        {"image_id": i, "id": 10 * i + j, "caption": c}
        for i, name in enumerate(caps)
        for j, c in enumerate(caps[name])
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def write_karpathy(path: Path, splits=("train", "restval", "val")) -> Path:
    images = [
        {"filename": name, "split": split, "sentences": [{"raw": c, "tokens": c.split()} for c in CAPS[name]]}
        for name, split in zip(CAPS, splits)
    ]
    path.write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    return path


def write_table(path: Path, caps=CAPS) -> Path:
    rows = [{"image": name, "caption": c} for name in caps for c in caps[name]]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["image", "caption"])
            writer.writeheader()
            writer.writerows(rows)
    return path


def by_image(records) -> dict:
    return {Path(r.path).name: r.captions for r in records}


def test_read_coco(images, tmp_path):
    records = read_coco(write_coco(tmp_path / "captions.json"), images)
    assert by_image(records) == CAPS
    assert [r.image_id for r in records] == ["0", "1", "2"] and all(r.split is None for r in records)


def test_read_karpathy(images, tmp_path):
    records = read_karpathy(write_karpathy(tmp_path / "dataset.json"), images)
    assert by_image(records) == CAPS
    assert [r.split for r in records] == ["train", "train", "val"]  # restval -> train


def test_read_flickr8k(images, tmp_path):
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("".join(f"{name}#{j}\t{c}\n" for name in CAPS for j, c in enumerate(CAPS[name])))
    assert by_image(read_flickr8k(token, images)) == CAPS
    (tmp_path / "train.txt").write_text("a.png\nb.png\n")
    (tmp_path / "val.txt").write_text("c.png\n")
    records = read_flickr8k(token, images, {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"})
    assert {r.image_id: r.split for r in records} == {"a.png": "train", "b.png": "train", "c.png": "val"}
    token.write_text("a.png 0 no tab\n")
    with pytest.raises(ValueError, match=r"Flickr8k.token.txt: line 1"):
        read_flickr8k(token, images)


@pytest.mark.parametrize("name", ["captions.csv", "captions.txt", "captions.jsonl"])
def test_read_caption_table(images, tmp_path, name):
    assert by_image(read_caption_table(write_table(tmp_path / name), images)) == CAPS


def test_caption_dataset_modes_and_collate(images, tmp_path):
    records = read_coco(write_coco(tmp_path / "captions.json"), images)
    ds = CaptionDataset(records)
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["captions"] == CAPS["b.png"] and item["image_id"] == "1"
    assert torch.allclose(item["image"][1], torch.ones(8, 8))
    pairs = CaptionDataset(records, mode="pairs")
    assert len(pairs) == 7
    assert [(p["image_id"], p["caption"]) for p in pairs] == [
        (r.image_id, c) for r in records for c in r.captions
    ]
    batch = next(iter(DataLoader(pairs, batch_size=4, collate_fn=collate_captions)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["caption"] == CAPS["a.png"] + CAPS["b.png"][:2]
    assert batch["image_id"] == ["0", "0", "1", "1"]
    batch = collate_captions([ds[0], ds[2]])
    assert batch["captions"] == [CAPS["a.png"], CAPS["c.png"]]
    with pytest.raises(ValueError, match="mode"):
        CaptionDataset(records, mode="captions")


def test_relative_paths_with_root(images, tmp_path):
    from mmtrans.data.caption_formats import CaptionRecord

    records = [CaptionRecord("a", "a.png", ["x"])]
    assert CaptionDataset(records, root=images)[0]["image"].shape == (3, 8, 8)


def test_split_by_image_is_seeded_and_keeps_captions_together():
    from mmtrans.data.caption_formats import CaptionRecord

    records = [CaptionRecord(str(i), f"{i}.png", [f"c{i}a", f"c{i}b"]) for i in range(50)]
    train, val, test = split_by_image(records, 0.2, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (35, 10, 5)
    ids = [r.image_id for part in (train, val, test) for r in part]
    assert sorted(ids, key=int) == [str(i) for i in range(50)]  # disjoint and complete
    assert split_by_image(records, 0.2, 0.1, seed=3) == (train, val, test)
    assert split_by_image(records, 0.2, 0.1, seed=4)[1] != val


def test_caption_splits(images, tmp_path):
    splits = caption_splits(
        "table", write_table(tmp_path / "c.csv"), images, val_fraction=0.34, test_fraction=0.0
    )
    assert splits.class_names == [] and splits.test is None
    assert splits.train.mode == "pairs" and splits.val.mode == "images"
    assert splits.train.num_images == 2 and len(splits.val) == 1
    train_ids = {r.image_id for r in splits.train.records}
    assert not train_ids & {r.image_id for r in splits.val.records}
    # Karpathy carries its split: restval joins train, no test images -> test is None.
    k = caption_splits("karpathy", write_karpathy(tmp_path / "dataset.json"), images)
    assert [r.image_id for r in k.train.records] == ["a.png", "b.png"] and k.val[0]["captions"] == CAPS[
        "c.png"
    ]
    assert k.test is None
    with pytest.raises(ValueError, match=r"dataset.json: the val split is empty"):
        caption_splits(
            "karpathy", write_karpathy(tmp_path / "dataset.json", ("train", "train", "test")), images
        )
    with pytest.raises(ValueError, match="unknown caption format"):
        caption_splits("yaml", tmp_path / "c.csv", images)


def test_errors_name_the_file(images, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON: line 2 column"):
        read_coco(bad, images)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"broken.json: the top level has no key 'annotations'"):
        read_coco(bad, images)
    bad.write_text(json.dumps({"images": [{"filename": "a.png", "sentences": []}]}))
    with pytest.raises(ValueError, match=r"broken.json: images\[0\] has no key 'split'"):
        read_karpathy(bad, images)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json", images)
    # Missing images are reported up front, with the first few listed.
    caps = dict(CAPS, **{"gone1.png": ["x"], "gone2.png": ["y"]})
    with pytest.raises(
        FileNotFoundError,
        match=r"captions.json: 2 of 5 referenced image files do not exist, e.g. .*gone1.png",
    ):
        read_coco(write_coco(tmp_path / "captions.json", caps), images)
    # Empty or non-string captions name the image.
    with pytest.raises(ValueError, match=r"c.jsonl: image 'b.png' has an empty"):
        read_caption_table(write_table(tmp_path / "c.jsonl", dict(CAPS, **{"b.png": ["ok", "  "]})), images)
    with pytest.raises(ValueError, match=r"captions.json: image '0' has an empty or non-string caption 3"):
        read_coco(write_coco(tmp_path / "captions.json", dict(CAPS, **{"a.png": [3]})), images)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"image": "a.png", "caption": "x"}\n{"image": "b.png"\n')
    with pytest.raises(ValueError, match=r"t.jsonl is not valid JSONL: line 2"):
        read_caption_table(jsonl, images)
    jsonl.write_text('{"image": "a.png", "text": "x"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl: line 1 has no key 'caption'"):
        read_caption_table(jsonl, images)
    table = tmp_path / "t.csv"
    table.write_text("file,text\na.png,x\n")
    with pytest.raises(ValueError, match=r"t.csv: CSV header must have columns"):
        read_caption_table(table, images)
    table.write_text("image,caption\n")
    with pytest.raises(ValueError, match=r"t.csv: no images with captions"):
        read_caption_table(table, images)


@pytest.mark.skipif(
    not FLICKR_1K.is_dir(), reason="../shared/data/flickr8k_1k is absent (only in the dev workspace)"
)
def test_flickr8k_1k_kaggle_csv():
    splits = caption_splits("table", FLICKR_1K / "captions.txt", FLICKR_1K / "images", seed=0)
    sizes = (splits.train.num_images, splits.val.num_images, splits.test.num_images)
    assert sizes == (800, 100, 100)
    assert len(splits.train) == 4000  # pairs: 5 captions per image
    item = splits.val[0]
    assert len(item["captions"]) == 5 and item["image"].shape[0] == 3
    assert all(isinstance(c, str) and c.strip() for c in item["captions"])
    ids = [{r.image_id for r in ds.records} for ds in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_coco_duplicate_image_id_is_named(images, tmp_path):
    path = write_coco(tmp_path / "dup.json")
    data = json.loads(path.read_text())
    data["images"].append(dict(data["images"][0]))
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"dup.json: images\[\d+\] repeats image id"):
        read_coco(path, images)
