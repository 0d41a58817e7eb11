import pytest
import torch

from mmtrans.nn import Block, DropPath, PatchEmbed, resample_pos_embed, sincos_pos_embed_2d


def test_resample_pos_embed_matches_timm():
    from timm.layers import resample_abs_pos_embed

    pe = torch.randn(1, 1 + 14 * 14, 64)
    ours = resample_pos_embed(pe, (16, 12), num_prefix_tokens=1)
    ref = resample_abs_pos_embed(pe, (16, 12), num_prefix_tokens=1)
    assert ours.shape == (1, 1 + 16 * 12, 64)
    torch.testing.assert_close(ours, ref)
    assert resample_pos_embed(pe, (14, 14)) is pe


def test_sincos_2d_is_distinct_per_position():
    t = sincos_pos_embed_2d(32, (4, 5))
    assert t.shape == (20, 32)
    assert torch.cdist(t, t).add(torch.eye(20)).min() > 0.1


def test_patch_embed_shapes_and_errors():
    pe = PatchEmbed(32, 4, 3, 48)
    assert pe(torch.randn(2, 3, 32, 32)).shape == (2, 64, 48)
    with pytest.raises(ValueError, match="img_size"):
        pe(torch.randn(2, 3, 36, 36))
    with pytest.raises(ValueError, match="does not divide the image size"):
        PatchEmbed(30, 4)


def test_drop_path_is_identity_in_eval_and_unbiased_in_train():
    dp = DropPath(0.5)
    x = torch.ones(4000, 1)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and abs(y.mean().item() - 1) < 0.1


def test_block_layerscale_and_drop_path_options():
    blk = Block(16, 2, init_values=1e-5, drop_path=0.1)
    assert blk.ls1.gamma.shape == (16,)
    blk.eval()
    x = torch.randn(2, 5, 16)
    # LayerScale at 1e-5 keeps the block near identity at init
    assert (blk(x) - x).abs().max() < 1e-3
