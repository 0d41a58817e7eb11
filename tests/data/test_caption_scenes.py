import re

import pytest
import torch
from torch.utils.data import DataLoader

from mmtrans.data.caption_scenes import (
    NUM_CAPTIONS,
    PALETTE,
    SCENE_KINDS,
    SceneCaptionDataset,
    scene_caption_splits,
    scene_vocabulary,
)
from mmtrans.data.captions import collate_captions


def words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+|[:,]", caption)


def test_deterministic_per_seed_and_index():
    a, b = SceneCaptionDataset(20, seed=1), SceneCaptionDataset(20, seed=1)
    for i in (0, 7, 19):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["captions"] == b[i]["captions"]
    # Same global index -> same scene, whatever the slice.
    shifted = SceneCaptionDataset(5, seed=1, first_index=7)
    assert torch.equal(shifted[0]["image"], a[7]["image"]) and shifted[0]["image_id"] == a[7]["image_id"]
    other = SceneCaptionDataset(20, seed=2)
    assert any(other[i]["captions"] != a[i]["captions"] for i in range(5))


def test_cache_serves_what_drawing_gives_and_draws_each_scene_once(monkeypatch):
    plain = SceneCaptionDataset(6, mode="pairs")
    cached = SceneCaptionDataset(6, mode="pairs", cache=True)
    drawn = []
    render = SceneCaptionDataset.render_array
    monkeypatch.setattr(SceneCaptionDataset, "render_array", lambda self, i: drawn.append(self) or render(self, i))
    for _ in range(2):  # two epochs, and a negative index
        for k in [*range(len(cached)), -1]:
            a, b = plain[k], cached[k]
            assert torch.equal(a["image"], b["image"]) and (a["caption"], a["image_id"]) == (b["caption"], b["image_id"])
    assert drawn.count(plain) == 2 * (len(plain) + 1) and drawn.count(cached) == 6  # each scene once
    images = SceneCaptionDataset(3, cache=True)
    images[0]["captions"].append("edited")
    assert images[0]["captions"] == plain.captions(0)  # the cache hands out copies
    with pytest.raises(IndexError):
        images[3]
    splits = scene_caption_splits(num_train=2, num_val=1, num_test=1, img_size=32, cache=True)
    assert all(d._cache == {} for d in (splits.train, splits.val, splits.test))


def test_images_and_captions():
    ds = SceneCaptionDataset(60, img_size=64)
    counts = set()
    for i in range(len(ds)):
        item = ds[i]
        shapes = ds.scene(i)
        counts.add(len(shapes))
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert len(item["captions"]) == NUM_CAPTIONS == len(set(item["captions"]))
        for caption in item["captions"]:
            assert set(words(caption)) <= set(scene_vocabulary())
            # Every reference names the first shape's colour and kind.
            assert f"{shapes[0].colour} {shapes[0].kind}" in caption
        if len(shapes) == 1:
            assert all(shapes[0].colour in c for c in item["captions"])
            assert not any(c in " ".join(item["captions"]) for c in set(PALETTE) - {shapes[0].colour})
        else:
            assert all(f"{shapes[1].colour} {shapes[1].kind}" in c for c in item["captions"][:3])
            assert item["captions"][3].startswith({2: "two shapes", 3: "three shapes"}[len(shapes)])
        for a in shapes:  # non-overlapping, inside the image
            assert a.kind in SCENE_KINDS and a.radius < a.cx < 1 - a.radius and a.radius < a.cy < 1 - a.radius
            for b in shapes:
                if a is not b:
                    assert ((a.cx - b.cx) ** 2 + (a.cy - b.cy) ** 2) ** 0.5 > a.radius + b.radius
    assert counts == {1, 2, 3}
    assert len(scene_vocabulary()) < 60


def test_spatial_relation_matches_positions():
    ds = SceneCaptionDataset(80)
    seen = set()
    for i in range(len(ds)):
        shapes = ds.scene(i)
        if len(shapes) < 2:
            continue
        a, b = shapes[:2]
        caption = ds.captions(i)[0]
        if "left of" in caption:
            assert a.cx < b.cx and abs(a.cx - b.cx) > abs(a.cy - b.cy)
        elif "right of" in caption:
            assert a.cx > b.cx and abs(a.cx - b.cx) > abs(a.cy - b.cy)
        elif " above " in caption:
            assert a.cy < b.cy  # y grows downwards in images
        else:
            assert " below " in caption and a.cy > b.cy
        seen.add(next(r for r in ("left of", "right of", "above", "below") if r in caption))
    assert seen == {"left of", "right of", "above", "below"}


def test_colour_is_drawn():
    ds = SceneCaptionDataset(30, img_size=64)
    for i in range(len(ds)):
        shape = ds.scene(i)[0]
        pixels = ds.render_array(i)
        x, y = int(shape.cx * 64), int(shape.cy * 64)
        if shape.kind in ("ring", "cross", "triangle"):
            continue  # the centre of a ring is background; others are checked at their centre
        assert abs(pixels[y, x].astype(int) - PALETTE[shape.colour]).max() < 40


def test_pairs_mode_and_splits():
    pairs = SceneCaptionDataset(4, mode="pairs")
    images = SceneCaptionDataset(4)
    assert len(pairs) == 4 * NUM_CAPTIONS
    assert [pairs[k]["caption"] for k in range(5, 10)] == images[1]["captions"]
    assert pairs[-1]["image_id"] == images[3]["image_id"]
    with pytest.raises(IndexError):
        pairs[20]
    splits = scene_caption_splits(num_train=6, num_val=3, num_test=2, img_size=32)
    assert splits.class_names == [] and splits.train.mode == "pairs" and splits.val.mode == "images"
    ids = [{d[i]["image_id"] for i in range(len(d))} for d in (splits.train, splits.val, splits.test)]
    assert len(ids[0]) == 6 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    batch = next(iter(DataLoader(splits.train, batch_size=7, collate_fn=collate_captions)))
    assert batch["image"].shape == (7, 3, 32, 32) and len(batch["caption"]) == 7


def test_tiny_tokenizer_fits_vocabulary():
    from mmtrans.text import CaptionTokenizer

    ds = SceneCaptionDataset(100)
    texts = [c for i in range(len(ds)) for c in ds.captions(i)]
    tok = CaptionTokenizer.train(texts, vocab_size=200)
    for text in texts[:50]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size <= 200
