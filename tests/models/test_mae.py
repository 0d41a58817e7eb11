"""MaskedAutoencoder: masking and order restoring, patchify, the masked-only loss, learning,
and its encoder taken downstream (architecture checked, grid and channels adapted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmtrans.models import create_image_classifier, create_mae, load_pretrained, patchify, unpatchify
from mmtrans.models.mae import mae_encoder_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
            decoder_depth=1, decoder_num_heads=2)


def tiny_mae(**kw):
    torch.manual_seed(0)
    return create_mae(None, **{**TINY, **kw}).eval()


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.1])
def test_masking_keeps_int_n_times_one_minus_ratio_and_restores_order(ratio):
    mae = tiny_mae(mask_ratio=ratio)
    noise = torch.rand(5, 16)
    ids_keep, mask, ids_restore = mae.random_masking(noise)
    keep = int(16 * (1 - ratio))
    assert ids_keep.shape == (5, keep)
    assert (mask.sum(1) == 16 - keep).all()
    # Kept patches are the visible ones (mask 0 in image order) and all distinct.
    assert (torch.gather(mask, 1, ids_keep) == 0).all()
    assert all(len(set(row.tolist())) == keep for row in ids_keep)
    # The shuffled sequence (kept first, then hidden) gathered with ids_restore is the original.
    seq = torch.randn(5, 16, 3)
    shuffle = torch.argsort(noise, dim=1)
    shuffled = torch.gather(seq, 1, shuffle.unsqueeze(-1).expand(-1, -1, 3))
    torch.testing.assert_close(torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 3)), seq)


def test_mask_ratio_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="mask_ratio=0.95 keeps 0 of 16 patches"):
        tiny_mae(mask_ratio=0.95)(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        tiny_mae(mask_ratio=1.0)


def test_patchify_round_trip_and_patch_order():
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, (8, 8))
    assert p.shape == (2, 4 * 6, 8 * 8 * 3)
    torch.testing.assert_close(unpatchify(p, (8, 8), (4, 6)), x)
    # Patch 7 is row 1, column 1 (PatchEmbed's row-major order); values (row, col, channel).
    torch.testing.assert_close(p[:, 7], x[:, :, 8:16, 8:16].permute(0, 2, 3, 1).reshape(2, -1))


def test_forward_masked_with_every_patch_equals_forward_features():
    mae = tiny_mae()
    x = torch.randn(2, 3, 32, 32)
    all_ids = torch.arange(16).expand(2, -1)
    torch.testing.assert_close(mae.encoder.forward_masked(x, all_ids), mae.encoder.forward_features(x))
    assert mae.encoder.forward_masked(x, all_ids[:, :4]).shape == (2, 1 + 4, 32)


def test_loss_is_on_masked_patches_only():
    mae = tiny_mae()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        loss, pred, mask = mae(x)
    assert float(loss) == pytest.approx(float(mae.loss(x, pred, mask)))
    visible = (mask == 0).unsqueeze(-1)
    changed_visible = torch.where(visible, pred + 100.0, pred)
    assert float(mae.loss(x, changed_visible, mask)) == pytest.approx(float(loss), rel=1e-6)
    changed_hidden = torch.where(visible, pred, pred + 1.0)
    assert float(mae.loss(x, changed_hidden, mask)) > float(loss) + 0.5
    # norm_pix_loss: the target of each patch has mean 0, std 1.
    target = mae.target(x)
    torch.testing.assert_close(target.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)


def test_reconstruct_keeps_visible_patches():
    mae = tiny_mae()
    x = torch.randn(2, 3, 32, 32)
    recon, mask = mae.reconstruct(x)
    assert recon.shape == x.shape and mask.shape == (2, 1, 32, 32)
    torch.testing.assert_close(recon * (1 - mask), x * (1 - mask))


def test_loss_falls_on_a_tiny_set():
    from mmtrans.data.shapes import shapes_splits

    torch.manual_seed(0)
    train = shapes_splits(train_transform=None, eval_transform=None, num_train=64, num_val=1, num_test=1,
                          img_size=32, seed=0).train
    images = torch.stack([train[i]["image"] * 2 - 1 for i in range(64)])  # [0, 1] -> [-1, 1]
    mae = tiny_mae().train()
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = mae(images, noise=torch.rand(64, 16, generator=gen))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_encoder_loads_into_classifier_with_new_grid_and_channels(tmp_path: Path):
    mae = tiny_mae()
    # A Lightning checkpoint of the pretrain task: the model under `model.`.
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in mae.state_dict().items()}}, ckpt)
    clf = create_image_classifier(None, num_classes=3, img_size=48, in_chans=1, patch_size=8, embed_dim=32,
                                  depth=1, num_heads=2)
    load_pretrained(clf, str(ckpt))  # raises on any missing / unexpected key
    torch.testing.assert_close(clf.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    assert clf.encoder.pos_embed.shape == (1, 1 + 36, 32)
    torch.testing.assert_close(clf.encoder.patch_embed.proj.weight,
                               mae.encoder.patch_embed.proj.weight.sum(1, keepdim=True))
    # Average pooling: the encoder's final norm becomes the head's norm (timm's fc_norm).
    avg = create_image_classifier(None, num_classes=3, img_size=32, patch_size=8, embed_dim=32, depth=1,
                                  num_heads=2, global_pool="avg")
    load_pretrained(avg, str(ckpt))
    torch.testing.assert_close(avg.head.norm.weight, mae.encoder.norm.weight)


def test_architecture_mismatch_names_the_keys_to_set():
    mae = tiny_mae()
    clf = create_image_classifier(None, num_classes=3, img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    with pytest.raises(ValueError, match=r"patch_size \(8, 8\) vs \(16, 16\).*depth 1 vs 2.*model.patch_size=8 model.depth=1"):
        mae_encoder_state_dict(mae.state_dict(), clf.encoder, "run/last.ckpt")


def test_conv_stem_encoder_loads_into_a_conv_stem_classifier(tmp_path: Path):
    """The MedMNIST recipe's stem: a conv stem's last layer is a 1x1 `proj`, whose kernel is not
    the patch; its layers' shapes are compared instead."""
    mae = tiny_mae(stem="conv", in_chans=1)  # patch 8: three stride-2 convs
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in mae.state_dict().items()}}, ckpt)
    clf = create_image_classifier(None, num_classes=2, img_size=64, in_chans=1, patch_size=8, embed_dim=32,
                                  depth=1, num_heads=2, stem="conv")
    load_pretrained(clf, str(ckpt))  # raises on any missing / unexpected key
    torch.testing.assert_close(clf.encoder.patch_embed.stem[0].weight, mae.encoder.patch_embed.stem[0].weight)
    other = create_image_classifier(None, num_classes=2, img_size=32, in_chans=1, patch_size=4, embed_dim=32,
                                    depth=1, num_heads=2, stem="conv")
    with pytest.raises(ValueError, match=r"another token stem .* stem='conv', patch_size=4 \(patch_embed\.stem\."):
        mae_encoder_state_dict(mae.state_dict(), other.encoder, "run/last.ckpt")
    with pytest.raises(ValueError, match=r"another token stem .* stem='patch', patch_size=8 \(patch_embed\.proj\.weight: \[32, 32, 1, 1\] vs \[32, 1, 8, 8\]"):
        mae_encoder_state_dict(mae.state_dict(), create_image_classifier(
            None, num_classes=2, img_size=32, in_chans=1, patch_size=8, embed_dim=32, depth=1, num_heads=2).encoder,
            "run/last.ckpt")
