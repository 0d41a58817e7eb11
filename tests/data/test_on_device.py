"""data.on_device: whole in-memory sets on the accelerator (here the CPU, so CI runs it), eval
batches equal to the CPU path's, train crops and flips with sane statistics."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from mmtrans.data.on_device import DeviceAugment, normalize_uint8
from mmtrans.data.scans import medical_scans_splits
from mmtrans.data.shapes import shapes_splits
from mmtrans.data.splits import Splits
from tasks.datamodule import DataModule


def datamodule(factory, on_device: bool, **kw) -> DataModule:
    dm = DataModule(factory, batch_size=8, num_workers=0, on_device=on_device, **kw)
    dm.setup("fit")
    return dm


def batches(dm: DataModule, loader) -> list[dict]:
    return [dm.on_after_batch_transfer(b, 0) for b in loader]


@pytest.mark.parametrize("factory,kw", [
    (functools.partial(shapes_splits, num_train=16, num_val=12, num_test=12), {"img_size": 32}),  # resize + crop
    (functools.partial(medical_scans_splits, num_train=16, num_val=12, num_test=12),
     {"img_size": 32, "in_chans": 3, "augment": {"crop_pct": 1.0}}),  # grey -> RGB
])
def test_eval_batches_equal_the_cpu_paths(factory, kw: dict) -> None:
    cpu, dev = datamodule(factory, False, **kw), datamodule(factory, True, **kw)
    for name in ("val_dataloader", "test_dataloader"):
        ref, got = batches(cpu, getattr(cpu, name)()), batches(dev, getattr(dev, name)())
        assert len(ref) == len(got) == 2
        for r, g in zip(ref, got):
            assert r["id"] == g["id"] and torch.equal(r["label"], g["label"])
            assert r["image"].dtype == g["image"].dtype and torch.equal(r["image"], g["image"])


def test_train_batches_are_augmented_on_the_device_with_the_right_labels() -> None:
    factory = functools.partial(shapes_splits, num_train=32, num_val=8, num_test=8)
    torch.manual_seed(0)
    cpu, dev = datamodule(factory, False, img_size=32), datamodule(factory, True, img_size=32)
    labels = {i: int(lb) for b in batches(cpu, cpu.train_dataloader()) for i, lb in zip(b["id"], b["label"])}
    loader = dev.train_dataloader()
    first = batches(dev, loader)
    assert len(first) == 4 and "memory" not in first[0]
    for b in first:
        assert b["image"].shape == (8, 3, 32, 32) and b["image"].dtype == torch.float32
        assert all(labels[i] == int(lb) for i, lb in zip(b["id"], b["label"]))
    loader.sampler.set_epoch(0)  # the same epoch again: the same batches
    again = batches(dev, loader)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))


def test_flips_happen_about_half_the_time_and_crops_keep_the_shape() -> None:
    images = torch.zeros(400, 3, 16, 16, dtype=torch.uint8)
    images[..., 8:] = 255  # right half bright: a flip puts it left
    aug = DeviceAugment(16, mean=[0.5] * 3, std=[0.5] * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5)
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.shape == (400, 3, 16, 16)
    flipped = (out[:, 0, 0, 0] > 0).float().mean().item()
    assert 0.43 < flipped < 0.57
    same = DeviceAugment(16, mean=[0.5] * 3, std=[0.5] * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    assert torch.equal(same(images[:4], torch.Generator()), normalize_uint8(images[:4], [0.5] * 3, [0.5] * 3))
    crops = DeviceAugment(24, mean=[0.5] * 3, std=[0.5] * 3, scale=(0.2, 0.6))(images[:8], torch.Generator())
    assert crops.shape == (8, 3, 24, 24)


def test_crop_boxes_follow_torchvisions_random_resized_crop() -> None:
    n, size, scale, ratio = 4000, 32, (0.3, 1.0), (3 / 4, 4 / 3)
    boxes = DeviceAugment(size, [0.5], [0.5], scale=scale, ratio=ratio).crop_boxes(n, size, size, torch.Generator())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= size).all() and (boxes[:, 3] <= size).all()
    torch.manual_seed(0)
    ref = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(1, size, size), list(scale), list(ratio))
                        for _ in range(n)], dtype=torch.float32)  # (top, left, h, w)
    ours_area, ref_area = w * h / size**2, ref[:, 2] * ref[:, 3] / size**2
    assert abs(ours_area.mean() - ref_area.mean()) < 0.02 and abs(ours_area.std() - ref_area.std()) < 0.02
    ours_aspect, ref_aspect = (w / h).log(), (ref[:, 3] / ref[:, 2]).log()
    assert abs(ours_aspect.mean() - ref_aspect.mean()) < 0.02 and abs(ours_aspect.std() - ref_aspect.std()) < 0.02


class OnDisk(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(3, 8, 8), "label": 0}


def test_refused_for_sets_not_in_memory_and_for_cpu_only_augmentations() -> None:
    def files(**kw) -> Splits:
        return Splits(OnDisk(), OnDisk(), None, ["a", "b"])

    with pytest.raises(ValueError, match=r"data.on_device=true .* held in memory .* \(OnDisk\) is not"):
        DataModule(files, img_size=8, batch_size=2, on_device=True).setup("fit")
    factory = functools.partial(shapes_splits, num_train=8, num_val=4, num_test=4)
    with pytest.raises(ValueError, match=r"crops and flips only; data.augment has \{'color_jitter': 0.4\}"):
        DataModule(factory, img_size=32, batch_size=2, on_device=True, augment={"color_jitter": 0.4}).setup("fit")
    with pytest.raises(ValueError, match="data.on_device must be true or false"):
        DataModule(factory, on_device="yes")


def test_a_run_with_data_on_device_trains(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from train import train

    tiny = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "data.img_size=32",
            "data.batch_size=8", "data.num_train=16", "data.num_val=8", "data.num_test=8", "trainer.accelerator=cpu",
            "trainer.fast_dev_run=true", f"paths.output_dir={tmp_path}", "data.on_device=true"]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        metrics, objects = train(compose("config", overrides=tiny))
    assert objects["datamodule"].on_device and 0.0 <= metrics["test/acc"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
