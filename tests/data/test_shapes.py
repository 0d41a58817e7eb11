"""The procedural shapes data set: determinism, balance, visibility, disjoint splits."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from mmtrans.data import SHAPES_CLASSES, ShapesDataset, Splits, build_transform, shapes_splits


def test_same_seed_and_index_give_identical_samples():
    a, b = ShapesDataset(20, seed=3), ShapesDataset(20, seed=3)
    for i in (0, 7, 19):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and x["label"] == y["label"] and x["id"] == y["id"]
    # Reading again (random access, any order) gives the same sample: no hidden global state.
    assert torch.equal(a[7]["image"], a[7]["image"])


def test_different_index_or_seed_gives_different_images():
    ds, other = ShapesDataset(10, seed=0), ShapesDataset(10, seed=1)
    assert not torch.equal(ds[0]["image"], ds[1]["image"])
    assert not torch.equal(ds[0]["image"], other[0]["image"])


def test_item_format():
    ds = ShapesDataset(4, img_size=24, seed=5)
    item = ds[2]
    assert set(item) == {"image", "label", "id"}
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert isinstance(item["label"], int) and 0 <= item["label"] < len(SHAPES_CLASSES)
    assert item["id"] == "shapes/5/2"
    image, label = ds.render(2)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (24, 24)
    assert label == item["label"]
    # Without a transform the tensor is exactly the rendered image.
    assert torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255, item["image"])
    assert ds[-1]["id"] == "shapes/5/3"
    with pytest.raises(IndexError):
        ds[4]


def test_at_least_six_classes_roughly_balanced():
    assert len(SHAPES_CLASSES) >= 6 and len(set(SHAPES_CLASSES)) == len(SHAPES_CLASSES)
    ds = ShapesDataset(1200, img_size=8)  # labels do not depend on size; 8 px renders fastest
    counts = Counter(ds.render(i)[1] for i in range(len(ds)))
    expected = len(ds) / len(SHAPES_CLASSES)
    assert set(counts) == set(range(len(SHAPES_CLASSES)))
    assert all(0.65 * expected < c < 1.35 * expected for c in counts.values()), counts


def test_shape_is_visible_and_inside():
    # The shape's bounding circle lies inside the image, so the corners show background;
    # a visible shape covers a fair share of pixels whose luminance differs from it.
    ds = ShapesDataset(150, img_size=32, seed=2)
    luma = np.array([0.299, 0.587, 0.114])
    for i in range(len(ds)):
        pixels = ds.render_array(i)[0].astype(np.float64) @ luma / 255
        corners = np.array([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
        nearest = np.abs(pixels[..., None] - corners).min(-1)
        covered = (nearest > 0.15).mean()
        assert 0.04 < covered < 0.75, (i, covered)


def test_colour_carries_no_class_information():
    ds = ShapesDataset(400, img_size=16, seed=4)
    means = {c: [] for c in range(len(SHAPES_CLASSES))}
    for i in range(len(ds)):
        pixels, label = ds.render_array(i)
        means[label].append(pixels.reshape(-1, 3).mean(0))
    per_class = np.array([np.mean(v, axis=0) for v in means.values()])
    # Mean colour per class stays near the overall mean (a colour cue would separate them).
    assert np.abs(per_class - per_class.mean(0)).max() < 40


def test_transform_is_applied():
    tf = build_transform(16, train=False, mean=(0.5,), std=(0.5,), in_chans=1, crop_pct=1.0)
    item = ShapesDataset(2, img_size=32, transform=tf)[0]
    assert item["image"].shape == (1, 16, 16) and item["image"].min() >= -1.0


def test_splits_are_disjoint_and_stable():
    splits = shapes_splits(num_train=50, num_val=20, num_test=20, img_size=16, seed=0)
    assert isinstance(splits, Splits) and splits.num_classes == len(SHAPES_CLASSES)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 20, 20)
    ids = [
        {splits_ds[i]["id"] for i in range(len(splits_ds))}
        for splits_ds in (splits.train, splits.val, splits.test)
    ]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    images = [
        {ds.render_array(i)[0].tobytes() for i in range(len(ds))}
        for ds in (splits.train, splits.val, splits.test)
    ]
    assert not (images[0] & images[1]) and not (images[0] & images[2]) and not (images[1] & images[2])
    # The val set does not move when the train set grows.
    bigger = shapes_splits(num_train=80, num_val=20, num_test=20, img_size=16, seed=0)
    assert torch.equal(bigger.val[3]["image"], splits.val[3]["image"])


def test_transforms_reach_the_right_splits():
    def train_tf(img):
        return torch.zeros(1)

    def eval_tf(img):
        return torch.ones(1)

    splits = shapes_splits(train_tf, eval_tf, num_train=2, num_val=2, num_test=2, img_size=16)
    assert splits.train[0]["image"].item() == 0
    assert splits.val[0]["image"].item() == 1 and splits.test[0]["image"].item() == 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match="img_size"):
        ShapesDataset(1, img_size=4)
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset(1, seed=-1)


def test_class_set_is_configurable():
    from mmtrans.data.shapes import SHAPE_KINDS

    splits = shapes_splits(num_train=40, num_val=8, num_test=8, classes=SHAPE_KINDS)
    assert splits.class_names == SHAPE_KINDS and splits.num_classes == 8
    assert {splits.train[i]["label"] for i in range(40)} > set(range(6))
    with pytest.raises(ValueError, match="hexagon"):
        ShapesDataset(4, classes=["circle", "hexagon"])
