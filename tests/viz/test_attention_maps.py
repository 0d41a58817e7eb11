"""Attention rollout / class-token maps against hand computations, on tiny ViTs, and the pictures."""

import pytest
import torch
from PIL import Image

from mmtrans.models.vit import VisionTransformer
from mmtrans.viz import (
    attention_maps,
    attention_rollout,
    heatmap_grid,
    last_layer_cls_attention,
    overlay_heatmap,
)


def tiny_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    return VisionTransformer(**{**args, **kw})


def random_attns(B: int, heads: int, T: int, depth: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, heads, T, T, generator=g).mul(2).softmax(-1) for _ in range(depth)]


def one_hot_cls_attns(P: int, grid: tuple[int, int], k: int, depth: int = 2) -> list[torch.Tensor]:
    """Uniform attention, except that the class token (token 0) attends only to patch k."""
    T = P + grid[0] * grid[1]
    a = torch.full((1, 2, T, T), 1.0 / T)
    a[:, :, 0] = 0.0
    a[:, :, 0, P + k] = 1.0
    return [a.clone() for _ in range(depth)]


def assert_maps(maps: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(maps.shape) == shape
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(shape[0]), atol=1e-5, rtol=0)


# -- maps from models ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rollout", "cls"])
@pytest.mark.parametrize(
    "build, size",
    [
        (dict(img_size=32, patch_size=8), (32, 32)),
        (dict(img_size=28, patch_size=4), (28, 28)),
        (dict(img_size=(24, 40), patch_size=8), (24, 40)),  # non-square build
        (dict(img_size=32, patch_size=8, dynamic_img_size=True), (32, 48)),  # runs at another size
    ],
)
def test_maps_have_input_size_and_sum_to_one(method, build, size):
    model = tiny_vit(**build)
    maps = attention_maps(model, torch.rand(2, 3, *size), method=method)
    assert_maps(maps, (2, *size))
    assert not maps.requires_grad


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize(
    "kw", [dict(reg_tokens=2), dict(class_token=False, global_pool="avg"), dict(global_pool="avg")]
)
def test_prefix_variants_and_channels(in_chans, kw):
    model = tiny_vit(in_chans=in_chans, img_size=28, patch_size=4, **kw)
    for method in ("rollout", "cls"):
        assert_maps(attention_maps(model, torch.rand(3, in_chans, 28, 28), method=method), (3, 28, 28))
    maps = attention_maps(model, torch.rand(1, in_chans, 28, 28), head_fusion="max", discard_ratio=0.5)
    assert_maps(maps, (1, 28, 28))


def test_train_eval_flags_are_restored():
    model = tiny_vit(drop_rate=0.5)  # token dropout: maps would differ between calls in train mode
    model.train()
    model.blocks[0].eval()  # a mixed state, e.g. a frozen part, must survive too
    before = [m.training for m in model.modules()]
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(attention_maps(model, x), attention_maps(model, x), rtol=0, atol=0)
    assert [m.training for m in model.modules()] == before
    model.eval()
    attention_maps(model, x, method="cls")
    assert not any(m.training for m in model.modules())


def test_model_maps_use_the_last_blocks_attention():
    model = tiny_vit(reg_tokens=2)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        _, attns = model.forward_features(x, return_attn=True)
    expected = attns[-1].mean(1)[:, 0, 3:]
    expected = expected / expected.sum(-1, keepdim=True)
    grid_map = last_layer_cls_attention(attns, 3, (4, 4))
    torch.testing.assert_close(grid_map.flatten(1), expected)
    assert attention_maps(model, x, method="cls").shape == (2, 32, 32)


# -- rollout against hand computations -------------------------------------------------------
def test_single_block_rollout_equals_half_attention_plus_identity():
    P, grid = 1, (2, 3)
    T = P + 6
    attns = random_attns(2, 3, T, depth=1)
    a = 0.5 * attns[0].mean(1) + 0.5 * torch.eye(T)
    a = a / a.sum(-1, keepdim=True)
    # Class token: its row over the patches.
    cls = a[:, 0, P:] / a[:, 0, P:].sum(-1, keepdim=True)
    torch.testing.assert_close(attention_rollout(attns, P, grid).flatten(1), cls)
    # No class token: mean over the patch rows, where the identity does contribute.
    avg = a[:, P:, P:].mean(1)
    avg = avg / avg.sum(-1, keepdim=True)
    torch.testing.assert_close(attention_rollout(attns, P, grid, class_token=False).flatten(1), avg)


def test_two_block_rollout_with_max_fusion_renormalises_rows():
    P, grid = 2, (2, 2)
    T = P + 4
    attns = random_attns(1, 4, T, depth=2, seed=1)
    mats = []
    for at in attns:
        m = at[0].amax(0) + torch.eye(T)  # max over heads: rows no longer sum to 1
        mats.append(m / m.sum(-1, keepdim=True))
    r = mats[1] @ mats[0]
    expected = r[0, P:] / r[0, P:].sum()
    torch.testing.assert_close(attention_rollout(attns, P, grid, head_fusion="max")[0].flatten(), expected)


def test_discard_drops_lowest_patch_weights_but_never_prefix_columns():
    P, grid = 1, (2, 2)
    T = P + 4
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, 1, T, T, generator=g) + 0.1
    a[..., 0] = 1e-3  # attention to the class token is the weakest; it must survive anyway
    a = a / a.sum(-1, keepdim=True)
    ratio = 0.25
    n_drop = int(T * (T - P) * ratio)
    kept = a[0, 0].clone()
    patch = kept[:, P:].flatten()
    patch[patch.argsort()[:n_drop]] = 0
    kept[:, P:] = patch.view(T, T - P)
    m = (kept + torch.eye(T)) / 2
    m = m / m.sum(-1, keepdim=True)
    expected = m[0, P:] / m[0, P:].sum()
    got = attention_rollout([a], P, grid, discard_ratio=ratio)[0].flatten()
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, attention_rollout([a], P, grid)[0].flatten())


@pytest.mark.parametrize("P", [1, 3])  # 3: class token + 2 registers (registers never in the map)
@pytest.mark.parametrize("method", [attention_rollout, last_layer_cls_attention])
def test_class_token_attending_one_patch_peaks_there(method, P):
    grid, k = (3, 4), 7
    maps = method(one_hot_cls_attns(P, grid, k), P, grid)
    assert maps.shape == (1, *grid)
    assert maps.flatten(1).argmax(-1).item() == k
    torch.testing.assert_close(maps.sum(), torch.tensor(1.0))
    if method is last_layer_cls_attention:
        assert maps.flatten()[k].item() == pytest.approx(1.0)


def test_registers_excluded_even_when_they_take_the_attention():
    P, grid = 3, (2, 2)
    T = P + 4
    a = torch.zeros(1, 1, T, T)
    a[..., 1:3] = 0.45  # every token looks mostly at the two registers
    a[..., P:] = 0.1 / 4
    maps = last_layer_cls_attention([a], P, grid)
    torch.testing.assert_close(maps, torch.full((1, 2, 2), 0.25))


def test_bad_arguments_raise():
    attns = random_attns(1, 2, 5, depth=1)
    with pytest.raises(ValueError, match="expected"):
        attention_rollout(attns, 1, (3, 3))
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(attns, 1, (2, 2), head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout(attns, 1, (2, 2), discard_ratio=1.0)
    with pytest.raises(ValueError, match="empty"):
        last_layer_cls_attention([], 1, (2, 2))
    with pytest.raises(ValueError, match="method"):
        attention_maps(tiny_vit(), torch.rand(1, 3, 32, 32), method="gradcam")


# -- pictures --------------------------------------------------------------------------------
@pytest.mark.parametrize("C", [1, 3])
def test_overlay_is_rgb_of_image_size(C):
    img = torch.rand(C, 20, 12)
    heat = torch.rand(20, 12)
    pic = overlay_heatmap(img, heat)
    assert isinstance(pic, Image.Image) and pic.mode == "RGB" and pic.size == (12, 20)
    plain = overlay_heatmap(img, heat, alpha=0.0)
    px = plain.getpixel((3, 4))
    if C == 1:
        assert px[0] == px[1] == px[2]  # grey stays grey
    # Full alpha shows the colormap alone: jet is dark red at the maximum, dark blue at the minimum.
    hot = torch.zeros(20, 12)
    hot[0, 0] = 1.0
    full = overlay_heatmap(img, hot, alpha=1.0)
    assert full.getpixel((0, 0)) == (128, 0, 0) and full.getpixel((5, 5)) == (0, 0, 128)
    with pytest.raises(ValueError, match="heat"):
        overlay_heatmap(img, torch.rand(12, 20))
    with pytest.raises(ValueError, match="colormap"):
        overlay_heatmap(img, heat, colormap="viridis")


@pytest.mark.parametrize("titles", [None, ["true: nodule | pred: nodule 0.93", "true: normal | pred: x 0.51"]])
def test_heatmap_grid_layout(titles):
    model = tiny_vit(in_chans=1, img_size=28, patch_size=4)
    images = torch.rand(2, 1, 28, 28)
    heats = {m: attention_maps(model, images, method=m) for m in ("rollout", "cls")}
    pic = heatmap_grid(images, heats, titles, scale=4)
    assert pic.mode == "RGB"
    title_h = 14 if titles else 0
    assert pic.size == (3 * (112 + 4) + 4, 16 + 2 * (title_h + 112 + 4))
    # The input column is the image enlarged with nearest resampling: blocks of 4x4 equal pixels.
    top = 16 + title_h
    assert pic.getpixel((4, top)) == pic.getpixel((7, top + 3))


def test_heatmap_grid_rejects_bad_inputs():
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="empty"):
        heatmap_grid(images, {})
    with pytest.raises(ValueError, match="shape"):
        heatmap_grid(images, {"rollout": torch.rand(3, 8, 8)})
    with pytest.raises(ValueError, match="titles"):
        heatmap_grid(images, {"rollout": torch.rand(2, 8, 8)}, titles=["one"])
