"""image_folder_splits in both layouts, its errors, and the shared hymenoptera set."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmtrans.data import ImageFolderDataset, build_transform, image_folder_splits

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
HYMENOPTERA = SHARED_DATA / "hymenoptera" / "hymenoptera_data"


def make_tree(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    """root/<class>/<i><ext>: tiny 8x8 images, colour by class and index."""
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * c, 7 * i % 256, 90)).save(root / name / f"{i:03d}{ext}")
    return root


def paths(dataset: ImageFolderDataset) -> set[str]:
    return {p for p, _ in dataset.samples}


def test_class_folders_split_stratified_disjoint_reproducible(tmp_path):
    root = make_tree(tmp_path / "data", {"cat": 20, "dog": 30, "eel": 10})
    splits = image_folder_splits(root, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert splits.class_names == ["cat", "dog", "eel"] and splits.num_classes == 3
    train, val, test = paths(splits.train), paths(splits.val), paths(splits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 60
    for split, fraction in ((splits.val, 0.1), (splits.test, 0.2)):
        per_class = [sum(1 for _, y in split.samples if y == c) for c in range(3)]
        assert per_class == [round(n * fraction) for n in (20, 30, 10)]
    again = image_folder_splits(root, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert paths(again.val) == val and paths(again.test) == test
    other = image_folder_splits(root, val_fraction=0.1, test_fraction=0.2, seed=2)
    assert paths(other.val) != val


def test_items_are_dicts_with_path_ids(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 5, "b": 5})
    tf = build_transform(4, train=False, mean=(0.5,), std=(0.5,), crop_pct=1.0)
    splits = image_folder_splits(root, train_transform=tf, eval_transform=tf)
    item = splits.train[0]
    assert item["image"].shape == (3, 4, 4) and item["image"].dtype == torch.float32
    assert Path(item["id"]).parent.name == splits.class_names[item["label"]]
    raw = image_folder_splits(root).val[0]["image"]  # no transform: [0, 1] tensor at file size
    assert raw.shape == (3, 8, 8) and 0 <= raw.min() <= raw.max() <= 1


def test_small_classes_fill_train_first_and_no_test_without_fraction(tmp_path):
    root = make_tree(tmp_path / "data", {"big": 10, "one": 1, "two": 2})
    splits = image_folder_splits(root, val_fraction=0.2, test_fraction=0.2)
    counts = {
        name: [sum(1 for _, y in ds.samples if y == c) for ds in (splits.train, splits.val, splits.test)]
        for c, name in enumerate(splits.class_names)
    }
    assert counts == {"big": [6, 2, 2], "one": [1, 0, 0], "two": [1, 1, 0]}
    assert image_folder_splits(root, val_fraction=0.2, test_fraction=0.0).test is None
    with pytest.raises(ValueError, match="val_fraction"):
        image_folder_splits(root, val_fraction=0.6, test_fraction=0.5)


def test_skips_hidden_and_foreign_files_accepts_upper_case(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 3, "b": 3})
    Image.new("RGB", (8, 8)).save(root / "a" / "UPPER.PNG")
    (root / "a" / "._resource_fork.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "a" / "labels.txt").write_text("x")
    (root / ".cache").mkdir()
    splits = image_folder_splits(root, val_fraction=0.0, test_fraction=0.0)
    names = [Path(p).name for p in paths(splits.train)]
    assert "UPPER.PNG" in names and "._resource_fork.png" not in names and len(names) == 7
    assert splits.class_names == ["a", "b"]


def test_train_val_layout(tmp_path):
    make_tree(tmp_path / "train", {"ant": 4, "bee": 3, "fly": 2})
    make_tree(tmp_path / "val", {"ant": 2, "bee": 1})  # a class may be absent from val
    splits = image_folder_splits(tmp_path, seed=0)
    assert splits.class_names == ["ant", "bee", "fly"]
    assert (len(splits.train), len(splits.val)) == (9, 3)
    assert splits.test is splits.val  # documented: no test/ means test on val
    make_tree(tmp_path / "test", {"fly": 2})
    with_test = image_folder_splits(tmp_path)
    assert len(with_test.test) == 2 and {y for _, y in with_test.test.samples} == {2}


def test_val_class_unknown_to_train(tmp_path):
    make_tree(tmp_path / "train", {"ant": 2})
    make_tree(tmp_path / "val", {"ant": 1, "wasp": 1})
    with pytest.raises(ValueError, match=r"val.*'wasp'"):
        image_folder_splits(tmp_path)


def test_train_without_val(tmp_path):
    make_tree(tmp_path / "train", {"ant": 2, "bee": 2})
    with pytest.raises(ValueError, match="no val/"):
        image_folder_splits(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data root .*nowhere \(data.root\) does not exist"):
        image_folder_splits(tmp_path / "nowhere")


def test_no_class_folders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match=f"no class folders in {tmp_path}"):
        image_folder_splits(tmp_path)


def test_class_folder_without_images(tmp_path):
    make_tree(tmp_path, {"full": 3})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=r"class folder .*empty has no images"):
        image_folder_splits(tmp_path)


def test_corrupt_image_error_names_the_file(tmp_path):
    make_tree(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    splits = image_folder_splits(tmp_path, val_fraction=0.0, test_fraction=0.0)
    index = [p for p, _ in splits.train.samples].index(str(tmp_path / "a" / "000.png"))
    with pytest.raises(ValueError, match=r"cannot read image .*a/000.png"):
        splits.train[index]


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"shared data not found at {HYMENOPTERA}")
def test_hymenoptera():
    tf = build_transform(64, train=True, mean=(0.5,), std=(0.5,))
    splits = image_folder_splits(HYMENOPTERA, tf, tf, draft_size=128)
    assert splits.class_names == ["ants", "bees"]
    assert (len(splits.train), len(splits.val)) == (245, 153) and splits.test is splits.val
    gif = next(i for i, (p, _) in enumerate(splits.train.samples) if p.endswith(".gif"))
    for i in (0, gif, len(splits.train) - 1):
        item = splits.train[i]
        assert item["image"].shape == (3, 64, 64) and item["label"] in (0, 1)
