"""ViT options for small data: conv stem, shifted patch tokenization (SPT), locality self-attention (LSA)."""

import pytest
import torch

from mmtrans.models import VisionTransformer, convert_timm_vit, create_image_classifier
from mmtrans.nn import Attention, ConvStem, PatchEmbed, ShiftedPatchEmbed
from mmtrans.optim import param_groups
from mmtrans.viz import attention_maps

torch.manual_seed(0)
GREY28 = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)


# -- conv stem ----------------------------------------------------------------------------------
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("patch,n_convs", [(1, 1), (2, 1), (4, 2), (8, 3), (16, 4)])
def test_conv_stem_gives_the_patch_grid(patch, n_convs, in_chans):
    stem = ConvStem(32, patch, in_chans, embed_dim=48)
    ref = PatchEmbed(32, patch, in_chans, embed_dim=48)
    out = stem(torch.randn(2, in_chans, 32, 32))
    assert out.shape == (2, (32 // patch) ** 2, 48)
    assert (stem.grid_size, stem.num_patches, stem.patch_size) == (ref.grid_size, ref.num_patches, ref.patch_size)
    convs = [m for m in stem.stem if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == n_convs and all(c.kernel_size == (3, 3) for c in convs)
    assert all(c.stride == ((2, 2) if patch > 1 else (1, 1)) for c in convs)
    assert stem.proj.kernel_size == (1, 1) and stem.proj.out_channels == 48  # last conv, named like PatchEmbed's
    assert stem.dynamic_grid((64, 32)) == (64 // patch, 32 // patch)


@pytest.mark.parametrize("patch,n_convs", [(1, 1), (2, 1), (4, 2), (8, 3)])
def test_pooled_conv_stem_convolves_every_pixel_then_max_pools(patch, n_convs):
    """stem='conv_pool' (CCT's tokenizer): stride-1 convs, each followed by a 3x3 stride-2 max-pool;
    same grid and parameter shapes as stem='conv' (from patch 4 on, under other keys: the pools sit between)."""
    stem = ConvStem(32, patch, 1, embed_dim=48, downsample="maxpool")
    assert stem(torch.randn(2, 1, 32, 32)).shape == (2, (32 // patch) ** 2, 48)
    convs = [m for m in stem.stem if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in stem.stem if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == n_convs and all(c.stride == (1, 1) for c in convs)
    assert len(pools) == (n_convs if patch > 1 else 0) and all(p.stride == 2 for p in pools)
    strided = ConvStem(32, patch, 1, embed_dim=48)
    assert sorted(p.shape for p in stem.parameters()) == sorted(p.shape for p in strided.parameters())
    vit = VisionTransformer(**GREY28, stem="conv_pool")
    assert vit.stem_type == "conv_pool" and isinstance(vit.patch_embed, ConvStem)
    assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 50, 32)
    with pytest.raises(ValueError, match="'avgpool'"):
        ConvStem(32, 4, 1, 48, downsample="avgpool")


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_stem_depth_adds_stride_1_convs_at_each_resolution(downsample):
    """``stem_depth=k``: each stage is its downsampling conv, then k-1 more 3x3 convs (stride 1,
    same width) at that resolution; the token grid and the 1x1 projection stay as they were."""
    deep = ConvStem(32, 4, 1, embed_dim=48, downsample=downsample, depth=3)
    assert deep(torch.randn(2, 1, 32, 32)).shape == (2, 64, 48)
    convs = [m for m in deep.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 24), (24, 24), (24, 24), (24, 48), (48, 48), (48, 48)]
    assert [c.stride[0] for c in convs] == ([2, 1, 1] * 2 if downsample == "stride" else [1] * 6)
    assert len([m for m in deep.stem if isinstance(m, torch.nn.BatchNorm2d)]) == 6
    vit = VisionTransformer(**GREY28, stem="conv" if downsample == "stride" else "conv_pool", stem_depth=2)
    assert len([m for m in vit.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]) == 4
    assert vit(torch.randn(2, 1, 28, 28)).shape == (2, 50, 32)
    with pytest.raises(ValueError, match=r"stem_depth=2 needs stem='conv'.*'spt'"):
        VisionTransformer(**GREY28, stem="spt", stem_depth=2)
    with pytest.raises(ValueError, match="got 0"):
        ConvStem(32, 4, 1, 48, depth=0)


def test_conv_stem_rejects_a_patch_it_cannot_stride_to():
    with pytest.raises(ValueError, match="power-of-2"):
        ConvStem(36, 6, 3, 32)


# -- shifted patch tokenization ------------------------------------------------------------------
def test_spt_shapes():
    spt = ShiftedPatchEmbed(28, 4, in_chans=1, embed_dim=32)
    assert spt.norm.normalized_shape == (5 * 1 * 4 * 4,)
    assert spt(torch.randn(3, 1, 28, 28)).shape == (3, 49, 32)
    rgb = ShiftedPatchEmbed(32, 8, in_chans=3, embed_dim=16)
    assert rgb.shifted(torch.randn(2, 3, 32, 32)).shape == (2, 15, 32, 32)
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 16, 16)


@pytest.mark.parametrize("patch", [1, 4, 8])
def test_spt_shifts_by_half_a_patch_diagonally(patch):
    """Block k of the 5 reads the neighbour at (dy, dx): left-up, right-up, left-down, right-down
    (the authors' x_lu, x_ru, x_lb, x_rb), so a lone pixel at (r, c) shows up at (r - dy, c - dx)."""
    spt = ShiftedPatchEmbed(16, patch, in_chans=2, embed_dim=8)
    s = max(patch // 2, 1)
    r, c = 7, 9
    x = torch.zeros(1, 2, 16, 16)
    x[0, 1, r, c] = 1.0  # second channel: blocks are [x, lu, ru, lb, rb], each with both channels
    out = spt.shifted(x)
    for k, (dy, dx) in enumerate([(0, 0), (-s, -s), (-s, s), (s, -s), (s, s)]):
        expected = torch.zeros(2, 16, 16)
        expected[1, r - dy, c - dx] = 1.0
        torch.testing.assert_close(out[0, 2 * k:2 * k + 2], expected, atol=0, rtol=0)


def test_spt_shift_pads_with_zeros_at_the_border():
    spt = ShiftedPatchEmbed(8, 4, in_chans=1, embed_dim=8)
    out = spt.shifted(torch.ones(1, 1, 8, 8))
    assert out[0, 1, :2].abs().sum() == 0 and out[0, 1, :, :2].abs().sum() == 0  # left-up: top rows, left cols
    assert out[0, 4, -2:].abs().sum() == 0 and out[0, 4, :, -2:].abs().sum() == 0  # right-down: bottom, right
    assert out[0, 1, 2:, 2:].eq(1).all()


def test_spt_tokens_flatten_each_patch_as_row_col_channel():
    """Token (i, j) = proj(LayerNorm(patch values ordered (p1 p2 c))), as the reference Rearrange."""
    spt = ShiftedPatchEmbed(8, 4, in_chans=2, embed_dim=6).eval()
    x = torch.randn(2, 2, 8, 8)
    s = spt.shifted(x)
    rows = []
    for gi in range(2):
        for gj in range(2):
            patch = s[:, :, gi * 4:(gi + 1) * 4, gj * 4:(gj + 1) * 4]  # [B, 5C, p, p]
            rows.append(torch.stack([patch[:, ch, a, b] for a in range(4) for b in range(4) for ch in range(10)], -1))
    flat = torch.stack(rows, 1)
    torch.testing.assert_close(spt(x), spt.proj(spt.norm(flat)), atol=1e-6, rtol=0)


# -- locality self-attention ------------------------------------------------------------------------
def lsa_reference(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' LSA: per-head learned scale, diagonal set to a huge negative before softmax."""
    B, L, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    dots = (q @ k.transpose(-2, -1)) * attn.lsa_scale.view(1, -1, 1, 1)
    dots = dots.masked_fill(torch.eye(L, dtype=torch.bool), -987654321.0)
    w = dots.softmax(-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B, L, D)), w


def test_lsa_fused_explicit_and_reference_agree_with_zero_diagonal():
    attn = Attention(32, num_heads=4, qkv_bias=True, locality_attn=True).eval()
    with torch.no_grad():
        attn.lsa_scale.copy_(torch.tensor([0.1, 0.3, 0.5, 1.0]))  # per-head, not the init value
    x = torch.randn(3, 9, 32)
    fused = attn(x)
    explicit, w = attn(x, return_attn=True)
    ref, ref_w = lsa_reference(attn, x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=0)
    assert w.diagonal(dim1=-2, dim2=-1).eq(0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 9))
    attn.fused_attn = False
    torch.testing.assert_close(attn(x), fused, atol=1e-5, rtol=0)


def test_lsa_combines_with_a_padding_mask():
    attn = Attention(16, num_heads=2, locality_attn=True).eval()
    x, pad = torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    pad[0, -2:] = True
    out, w = attn(x, key_padding_mask=pad, return_attn=True)
    torch.testing.assert_close(attn(x, key_padding_mask=pad), out, atol=1e-5, rtol=0)
    assert w.diagonal(dim1=-2, dim2=-1).eq(0).all() and w[0, :, :, -2:].eq(0).all()


def test_lsa_scale_is_a_learned_parameter():
    attn = Attention(16, num_heads=2, locality_attn=True)
    assert isinstance(attn.lsa_scale, torch.nn.Parameter)
    torch.testing.assert_close(attn.lsa_scale.detach(), torch.full((2,), 8**-0.5))
    attn(torch.randn(2, 5, 16)).square().sum().backward()
    assert attn.lsa_scale.grad is not None and attn.lsa_scale.grad.abs().sum() > 0
    assert Attention(16, num_heads=2).lsa_scale is None  # default: no new parameter (timm parity)


def test_lsa_refuses_cross_and_causal_attention():
    with pytest.raises(ValueError, match="cross=True"):
        Attention(16, num_heads=2, cross=True, locality_attn=True)
    with pytest.raises(ValueError, match="is_causal"):
        Attention(16, num_heads=2, locality_attn=True)(torch.randn(1, 4, 16), is_causal=True)


# -- the ViT with each option -----------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["patch", "conv", "spt"])
@pytest.mark.parametrize("locality_attn", [False, True])
def test_vit_option_trains_on_grey_28px(stem, locality_attn):
    torch.manual_seed(0)
    model = VisionTransformer(**GREY28, stem=stem, locality_attn=locality_attn)
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 1 + 49, 32)
    out[:, 0].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert type(model.patch_embed).__name__ == {"patch": "PatchEmbed", "conv": "ConvStem", "spt": "ShiftedPatchEmbed"}[stem]


def test_bad_stem_is_named():
    with pytest.raises(ValueError, match="'convv'"):
        VisionTransformer(**GREY28, stem="convv")


def test_new_parameters_in_layer_decay_and_no_decay():
    model = create_image_classifier(None, num_classes=3, stem="conv", locality_attn=True, **GREY28)
    enc = model.encoder
    assert enc.stem_type == "conv" and all(b.attn.locality_attn for b in enc.blocks)
    names = dict(model.named_parameters())
    stem_names = [n for n in names if n.startswith("encoder.patch_embed.")]
    assert len(stem_names) > 2 and all(model.layer_id(n) == 0 for n in stem_names)
    assert model.layer_id("encoder.blocks.1.attn.lsa_scale") == 2
    assert {f"encoder.blocks.{i}.attn.lsa_scale" for i in range(2)} <= model.no_weight_decay()
    no_decay = {id(p) for g in param_groups(model, 1e-3, 0.05) if g["weight_decay"] == 0 for p in g["params"]}
    assert id(names["encoder.blocks.0.attn.lsa_scale"]) in no_decay
    assert id(names["encoder.patch_embed.stem.0.weight"]) not in no_decay  # a conv filter decays


def test_timm_patch_weights_refuse_another_stem_but_own_weights_load():
    timm_like = VisionTransformer(**GREY28).state_dict()
    conv = VisionTransformer(**GREY28, stem="conv")
    with pytest.raises(ValueError, match="stem='patch'"):
        convert_timm_vit(timm_like, conv)
    # Own conv-stem weights look timm-like by key, and must pass unchanged (no grey-filter adaptation).
    own = conv.state_dict()
    converted = convert_timm_vit(own, VisionTransformer(**GREY28, stem="conv"))
    assert all(torch.equal(converted[k], v) for k, v in own.items())


def test_attention_maps_run_with_lsa_and_conv_stem():
    model = VisionTransformer(**GREY28, stem="conv", locality_attn=True)
    maps = attention_maps(model, torch.rand(2, 1, 28, 28))
    assert maps.shape == (2, 28, 28) and torch.isfinite(maps).all()
    _, attns = model.forward_features(torch.rand(1, 1, 28, 28), return_attn=True)
    assert all(a.diagonal(dim1=-2, dim2=-1).eq(0).all() for a in attns)


def test_conv_and_spt_stems_handle_dynamic_img_size():
    model = VisionTransformer(**{**GREY28, "dynamic_img_size": True}, stem="spt").eval()
    assert model(torch.randn(1, 1, 36, 28)).shape == (1, 1 + 9 * 7, 32)
    model = VisionTransformer(**{**GREY28, "dynamic_img_size": True}, stem="conv").eval()
    assert model(torch.randn(1, 1, 36, 28)).shape == (1, 1 + 9 * 7, 32)


def test_config_keys_reach_the_encoder():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        default = compose("config", overrides=["paths.output_dir=/tmp/run"])
        cfg = compose("config", overrides=["paths.output_dir=/tmp/run", "model.stem=spt", "model.locality_attn=true"])
    assert (default.model.stem, default.model.locality_attn) == ("patch", False)
    cfg.model.num_classes = 2
    enc = instantiate(cfg.model).encoder
    assert isinstance(enc.patch_embed, ShiftedPatchEmbed) and enc.blocks[0].attn.locality_attn
