"""tasks.datamodule.DataModule on the shapes data set."""

from functools import partial

import pytest
import torch

from mmtrans.data import SHAPES_CLASSES, Splits, shapes_splits
from tasks.datamodule import DataModule


def shapes(**kwargs):
    return partial(
        shapes_splits, **{"num_train": 40, "num_val": 12, "num_test": 10, "img_size": 16, **kwargs}
    )


def test_loaders_give_batches_of_the_right_shape():
    dm = DataModule(shapes(), img_size=16, batch_size=8, eval_batch_size=5)
    dm.setup("fit")
    assert dm.num_classes == len(SHAPES_CLASSES) == 6 and dm.class_names[0] == "circle"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and batch["label"].shape == (8,)
    assert isinstance(batch["id"], list) and len(batch["id"]) == 8
    assert len(dm.train_dataloader()) == 5  # 40 / 8, drop_last
    assert next(iter(dm.val_dataloader()))["image"].shape == (5, 3, 16, 16)
    assert sum(len(b["label"]) for b in dm.test_dataloader()) == 10


def test_grey_images():
    dm = DataModule(shapes(), img_size=12, in_chans=1, batch_size=4)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 1, 12, 12)
    assert next(iter(dm.val_dataloader()))["image"].shape == (4, 1, 12, 12)


def test_setup_builds_once():
    calls = []

    def factory(**kwargs):
        calls.append(kwargs)
        return shapes_splits(num_train=8, num_val=4, num_test=4, img_size=16, **kwargs)

    dm = DataModule(factory, img_size=16, batch_size=4)
    for stage in ("fit", "validate", "test", None):
        dm.setup(stage)
    assert len(calls) == 1 and set(calls[0]) == {"train_transform", "eval_transform"}


def test_properties_before_setup():
    with pytest.raises(RuntimeError, match="setup"):
        _ = DataModule(shapes()).num_classes


def test_test_falls_back_to_val():
    def no_test(**kwargs):
        splits = shapes_splits(num_train=8, num_val=6, num_test=1, img_size=16, **kwargs)
        return Splits(splits.train, splits.val, None, splits.class_names)

    dm = DataModule(no_test, img_size=16, batch_size=4)
    dm.setup("test")
    assert dm.test_dataloader().dataset is dm.splits.val


def test_batch_larger_than_train_split():
    dm = DataModule(shapes(num_train=10), img_size=16, batch_size=32)
    with pytest.raises(ValueError, match=r"data.batch_size=32 .*10 samples"):
        dm.setup("fit")
    lenient = DataModule(shapes(num_train=10), img_size=16, batch_size=32, drop_last=False)
    lenient.setup("fit")
    assert len(lenient.train_dataloader()) == 1


def test_empty_split_is_named():
    with pytest.raises(ValueError, match="the val split is empty"):
        DataModule(shapes(num_val=0), img_size=16, batch_size=4).setup()


def test_normalisation_is_resolved_once_config_then_pretrained_then_default():
    def val_image(dm):
        dm.setup()
        return dm.splits.val[0]["image"]

    identity = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    raw = val_image(DataModule(shapes(), img_size=16, batch_size=4, pretrained_cfg=identity))
    assert 0 <= raw.min() and raw.max() <= 1  # the weights' statistics, before any data set is built
    default = DataModule(shapes(), img_size=16, batch_size=4)
    assert default.preprocessing.mean == (0.5, 0.5, 0.5)
    assert torch.allclose(val_image(default), (raw - 0.5) / 0.5, atol=1e-6)
    pinned = DataModule(shapes(), img_size=16, batch_size=4, mean=(0.0,), std=(1.0,), pretrained_cfg={"mean": (9,) * 3})
    assert pinned.preprocessing.mean == (0.0, 0.0, 0.0)  # the config wins over the weights
    assert torch.allclose(val_image(pinned), raw)
    with pytest.raises(ValueError, match="data.mean and data.std"):
        DataModule(shapes(), mean=(0.5,))


def test_the_data_decides_what_only_it_knows(tmp_path):
    """A MedMNIST file's size and channels reach the preprocessing before any data set exists;
    the config still wins when it pins them."""
    import numpy as np

    from mmtrans.data.medmnist import medmnist_splits

    rgb = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "any.npz", **{f"{s}_images": rgb for s in ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    factory = partial(medmnist_splits)
    dm = DataModule(factory, batch_size=2, path=str(tmp_path / "any.npz"))
    assert (dm.preprocessing.img_size, dm.preprocessing.in_chans) == (20, 3)
    dm.setup("fit")
    assert dm.splits.label_type == "multiclass" and dm.num_classes == 3  # inferred from the labels
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 20, 20)
    grey = DataModule(factory, batch_size=2, in_chans=1, img_size=16, path=str(tmp_path / "any.npz"))
    assert (grey.preprocessing.img_size, grey.preprocessing.in_chans) == (16, 1)


def test_unknown_data_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"data.num_trian .*did you mean data.num_train\?.*num_val"):
        DataModule(shapes(), num_trian=3)


def test_augment_reaches_the_train_transform():
    # No crop, no flip, no resize: train and eval pipelines then agree exactly.
    augment = {"scale": (1.0, 1.0), "hflip": 0.0, "crop_pct": 1.0}
    dm = DataModule(shapes(), img_size=16, batch_size=4, augment=augment)
    dm.setup()
    train_like = dm.splits.train.transform(dm.splits.train.render(0)[0])
    eval_like = dm.splits.val.transform(dm.splits.train.render(0)[0])
    assert torch.allclose(train_like, eval_like, atol=1e-5)


def test_loader_options_and_worker_process():
    dm = DataModule(shapes(), img_size=16, batch_size=4, num_workers=1, persistent_workers=True)
    dm.setup()
    loader = dm.val_dataloader()
    assert (
        loader.persistent_workers and not loader.drop_last and loader.pin_memory == torch.cuda.is_available()
    )
    assert next(iter(loader))["image"].shape == (4, 3, 16, 16)  # transforms pickle into the worker
    single = DataModule(shapes(), img_size=16, batch_size=4)
    single.setup()
    assert not single.train_dataloader().persistent_workers


def test_stored_preprocessing_rebuilds_the_eval_transform():
    """What a checkpoint stores (Preprocessing.as_dict) preprocesses new images like val/test."""
    import numpy as np
    from PIL import Image

    from mmtrans.data.preprocessing import Preprocessing

    augment = {"crop_pct": 0.8, "interpolation": "nearest", "hflip": 0.5}
    dm = DataModule(shapes(), img_size=16, batch_size=8, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), augment=augment)
    dm.setup("fit")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 29, 3), dtype=np.uint8))
    stored = dm.preprocessing.as_dict()
    assert stored == {"img_size": 16, "in_chans": 3, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4],
                      "interpolation": "nearest", "crop_pct": 0.8}
    rebuilt = Preprocessing.from_dict(stored).transform(train=False)
    assert torch.equal(rebuilt(img), dm.splits.val.transform(img))
    # The interpolation matters here: without it the pictures differ.
    plain = Preprocessing.from_dict({**stored, "interpolation": "bicubic"}).transform(train=False)
    assert not torch.equal(plain(img), dm.splits.val.transform(img))


def test_repeated_augmentation_serves_each_drawn_image_k_times_in_a_row():
    torch.manual_seed(0)
    dm = DataModule(shapes(num_train=12), img_size=16, batch_size=6, repeated_aug=3,
                    augment={"scale": (0.5, 1.0), "hflip": 0.5})
    dm.setup("fit")
    ids = [i for batch in dm.train_dataloader() for i in batch["id"]]
    assert len(ids) == 12  # an epoch as long as the data set
    assert all(ids[k] == ids[k - k % 3] for k in range(12))  # runs of 3 copies
    batch = next(iter(dm.train_dataloader()))
    assert not torch.equal(batch["image"][0], batch["image"][1])  # each copy augmented anew
    with pytest.raises(ValueError, match="data.repeated_aug"):
        DataModule(shapes(), repeated_aug=2, sampler="weighted")


def test_augment_options_reach_the_train_pipeline():
    from torchvision.transforms import v2

    dm = DataModule(shapes(), img_size=16, batch_size=4,
                    augment={"auto_augment": "trivial", "vflip": 0.5, "random_erasing": 0.25, "crop_pct": None})
    dm.setup("fit")
    kinds = [type(t) for t in dm.splits.train.transform.transforms]
    assert v2.TrivialAugmentWide in kinds and v2.RandomVerticalFlip in kinds and v2.RandomErasing in kinds
    assert v2.TrivialAugmentWide not in [type(t) for t in dm.splits.val.transform.transforms]
    assert dm.preprocessing.crop_pct == 0.875  # null: not pinned, the default holds
