"""Same weights, same outputs: timm's VisionTransformer vs ours (fp32, max abs diff < 1e-4)."""

import pytest
import timm
import torch
from timm.models import adapt_input_conv
from timm.models.vision_transformer import checkpoint_filter_fn

from mmtrans.models import ImageClassifier, VisionTransformer, convert_timm_vit, vit_kwargs_from_timm

# Small widths keep the suite fast; the structure (prefix tokens, pooling, norms) is what is tested.
SMALL = dict(embed_dim=64, depth=2, num_heads=4)
CONFIGS = {
    "tiny_224": ("vit_tiny_patch16_224", {}, {}),
    "img_size_160_to_256": ("vit_tiny_patch16_224", dict(img_size=160), dict(img_size=256)),
    "in_chans_1": ("vit_tiny_patch16_224", {}, dict(in_chans=1)),
    "avgpool_registers": ("vit_small_patch16_224", dict(global_pool="avg", reg_tokens=4, **SMALL), {}),
    "no_embed_class_layerscale_qknorm": (
        "vit_base_patch16_224", dict(no_embed_class=True, init_values=1e-5, qk_norm=True, img_size=64, **SMALL), {}
    ),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_timm_weights_give_timm_outputs(config):
    torch.manual_seed(0)
    name, src_kw, target_kw = CONFIGS[config]
    src = timm.create_model(name, pretrained=False, num_classes=7, **src_kw).eval()
    # timm's own model at the target size/channels, loaded the way timm loads pretrained weights
    ref = timm.create_model(name, pretrained=False, num_classes=7, **{**src_kw, **target_kw}).eval()
    sd = checkpoint_filter_fn(src.state_dict(), ref)
    if target_kw.get("in_chans", 3) != 3:
        sd["patch_embed.proj.weight"] = adapt_input_conv(target_kw["in_chans"], sd["patch_embed.proj.weight"])
    ref.load_state_dict(sd)

    ours = ImageClassifier(VisionTransformer(**vit_kwargs_from_timm(ref)), num_classes=7).eval()
    ours.load_state_dict(convert_timm_vit(src.state_dict(), ours), strict=True)
    H, W = ours.encoder.patch_embed.img_size
    x = torch.randn(2, ours.encoder.in_chans, H, W)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-4
        feats = ref.forward_features(x)
        ours_feats = ours.forward_features(x)
    if not ours.encoder.use_fc_norm:
        assert (ours_feats - feats).abs().max().item() < 1e-4


def test_explicit_attention_path_matches_fused_and_returns_weights():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens, attns = vit.forward_features(x, return_attn=True)
    torch.testing.assert_close(tokens, vit(x), atol=1e-5, rtol=1e-5)
    assert len(attns) == 2 and attns[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(attns[0].sum(-1), torch.ones(2, 2, 17))


def test_dynamic_img_size_and_sincos():
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, dynamic_img_size=True)
    assert vit(torch.randn(1, 3, 48, 64)).shape == (1, 1 + 6 * 8, 32)
    sc = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, pos_embed="sincos",
                           global_pool="avg", class_token=False)
    assert sc.pos_embed is None and sc(torch.randn(1, 3, 32, 32)).shape == (1, 16, 32)


def test_grad_checkpointing_same_grads():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    x = torch.randn(2, 3, 32, 32)
    vit(x).sum().backward()
    g = [p.grad.clone() for p in vit.parameters()]
    vit.zero_grad()
    vit.set_grad_checkpointing(True)
    vit(x).sum().backward()
    for a, p in zip(g, vit.parameters()):
        torch.testing.assert_close(a, p.grad)
