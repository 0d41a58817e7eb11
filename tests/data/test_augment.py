"""Train-time augmentation options of build_transform (auto-augment, vertical flip, random
erasing) on grey and RGB images, and the repeated-augmentation sampler (against timm's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.distributed_sampler import RepeatAugSampler as TimmRepeatAugSampler
from torchvision.transforms import v2

from mmtrans.data import RepeatAugSampler, build_transform

OPTIONS = {
    "rand": dict(auto_augment="rand", auto_augment_kwargs={"num_ops": 2, "magnitude": 9}),
    "trivial": dict(auto_augment="trivial"),
    "vflip": dict(vflip=1.0),
    "random_erasing": dict(random_erasing=1.0),
    "all": dict(auto_augment="rand", vflip=0.5, random_erasing=0.5),
}


def image(mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (37, 50) if mode == "L" else (37, 50, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("mode,in_chans", [("L", 1), ("RGB", 3)])
def test_shape_dtype_and_determinism_under_a_seed(option: str, mode: str, in_chans: int) -> None:
    tf = build_transform(24, train=True, mean=(0.5,), std=(0.5,), in_chans=in_chans, **OPTIONS[option])
    img = image(mode)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(torch.stack([tf(img) for _ in range(8)]))  # 8 draws: most RandAugment ops run
    assert outs[0].shape == (8, in_chans, 24, 24) and outs[0].dtype == torch.float32
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0][0], outs[0][1])  # and random from one draw to the next


def test_options_sit_where_timm_puts_them() -> None:
    tf = build_transform(24, train=True, mean=(0.5,), std=(0.5,), in_chans=1, vflip=0.3, random_erasing=0.25,
                         auto_augment="trivial", auto_augment_kwargs={"num_magnitude_bins": 11})
    names = [type(t).__name__ for t in tf.transforms]
    assert names.index("RandomVerticalFlip") < names.index("TrivialAugmentWide") < names.index("ToImage")
    assert names[-2:] == ["Normalize", "RandomErasing"]  # erasing after normalisation
    assert tf.transforms[-1].p == 0.25 and tf.transforms[names.index("TrivialAugmentWide")].num_magnitude_bins == 11
    plain = build_transform(24, train=True, mean=(0.5,), std=(0.5,))
    assert not {"RandomVerticalFlip", "RandAugment", "TrivialAugmentWide", "RandomErasing"} & {
        type(t).__name__ for t in plain.transforms}
    # Train-only: eval pipelines ignore them.
    ev = build_transform(24, train=False, mean=(0.5,), std=(0.5,), auto_augment="rand", random_erasing=1.0)
    assert not any(isinstance(t, (v2.RandAugment, v2.RandomErasing)) for t in ev.transforms)


def test_vflip_flips() -> None:
    tf = build_transform(24, train=True, mean=(0.0,), std=(1.0,), in_chans=1, hflip=0.0, vflip=1.0, scale=(1.0, 1.0))
    img = image("L").resize((24, 24))
    plain = build_transform(24, train=False, mean=(0.0,), std=(1.0,), in_chans=1, crop_pct=1.0)
    torch.testing.assert_close(tf(img), plain(img).flip(-2))


def test_bad_values_are_named() -> None:
    with pytest.raises(ValueError, match="auto_augment.*'autoaug'"):
        build_transform(24, train=True, mean=(0.5,), std=(0.5,), auto_augment="autoaug")
    with pytest.raises(ValueError, match="random_erasing"):
        build_transform(24, train=True, mean=(0.5,), std=(0.5,), random_erasing=1.5)
    with pytest.raises(ValueError, match="auto_augment_kwargs.*RandAugment"):
        build_transform(24, train=True, mean=(0.5,), std=(0.5,), auto_augment="rand",
                        auto_augment_kwargs={"strength": 3})


# -- RepeatAugSampler ---------------------------------------------------------------------------
def test_each_index_repeats_consecutively_and_epochs_differ() -> None:
    sampler = RepeatAugSampler(10, num_repeats=3, seed=5, selected_round=None)
    first = list(sampler)
    assert len(first) == len(sampler) == 30
    chunks = [first[i:i + 3] for i in range(0, 30, 3)]
    assert all(len(set(c)) == 1 for c in chunks)  # each image 3 times in a row
    assert sorted(c[0] for c in chunks) == list(range(10))  # every image once per chunk
    assert list(sampler) == first  # same epoch: same order
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(RepeatAugSampler(10, 3, shuffle=False, selected_round=None)) == [i // 3 for i in range(30)]


@pytest.mark.parametrize("n,replicas", [(12, 2), (11, 3)])
def test_rank_shards_are_disjoint_and_cover_the_data(n: int, replicas: int) -> None:
    shards = [list(RepeatAugSampler(n, 3, seed=1, num_replicas=replicas, rank=r, selected_round=None))
              for r in range(replicas)]
    assert len({len(s) for s in shards}) == 1  # equal lengths: DDP ranks step together
    # The shards deal out one stream: interleaved back, it is the single-process stream (wrapped).
    single = list(RepeatAugSampler(n, 3, seed=1, num_replicas=1, rank=0, selected_round=None))
    dealt = [shards[i % replicas][i // replicas] for i in range(len(shards[0]) * replicas)]
    assert dealt[: 3 * n] == single and dealt[3 * n:] == single[: len(dealt) - 3 * n]
    counts = np.bincount([i for s in shards for i in s], minlength=n)
    assert (counts >= 3).all() and counts.sum() == len(dealt)


@pytest.mark.parametrize("n,replicas,selected_round", [(600, 2, 256), (100, 4, 256), (50, 1, 0)])
def test_deit_epoch_matches_timm(n: int, replicas: int, selected_round: int) -> None:
    for rank in range(replicas):
        ours = RepeatAugSampler(n, 3, seed=0, num_replicas=replicas, rank=rank, selected_round=selected_round)
        ref = TimmRepeatAugSampler(range(n), num_replicas=replicas, rank=rank, num_repeats=3,
                                   selected_round=selected_round)
        for epoch in (0, 4):
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref) and len(ours) == len(ref)


def test_sampler_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_repeats"):
        RepeatAugSampler(10, num_repeats=0)
    with pytest.raises(ValueError, match="rank"):
        RepeatAugSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="dataset_len"):
        RepeatAugSampler(0)
    assert (RepeatAugSampler(10).num_replicas, RepeatAugSampler(10).rank) == (1, 0)  # no process group
