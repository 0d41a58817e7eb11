"""CLIP / CoCa on the shared blocks: shapes, the loss against open_clip's ClipLoss and weight
parity with a random small open_clip CLIP (the DDP gather: test_clip_ddp.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mmtrans.models import (
    CoCa,
    ContrastiveModel,
    contrastive_chance_loss,
    contrastive_loss,
    create_captioner,
    create_clip,
)
from mmtrans.models.convert_open_clip import OPENAI_CLIP_MEAN, clip_kwargs_from_open_clip, convert_open_clip

open_clip = pytest.importorskip("open_clip")

TINY = dict(encoder_preset=None, embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8, vocab_size=50,
            text_embed_dim=32, text_depth=2, text_num_heads=2, max_len=16, joint_dim=24)


def _tokens(batch: int, length: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids with an end token of id vocab-1 (OpenAI's eot is the highest id) and the pad mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    ids = torch.randint(1, vocab - 1, (batch, length), generator=g)
    pad = torch.arange(length)[None] >= lengths[:, None]
    ids = ids.masked_fill(pad, 0)
    ids[torch.arange(batch), lengths - 1] = vocab - 1
    return ids, pad


@pytest.mark.parametrize("image_pool", ["attn", "cls", "avg"])
def test_clip_shapes_and_normalised_embeddings(image_pool):
    torch.manual_seed(0)
    model = create_clip(image_pool=image_pool, **TINY).eval()
    assert isinstance(model, ContrastiveModel) and not model.text.cross_attention
    ids, pad = _tokens(3, 10, 50)
    img, txt, scale = model(torch.randn(3, 3, 32, 32), ids, pad)
    assert img.shape == txt.shape == (3, 24)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    # Pooled at the last real token: padding after it changes nothing.
    longer = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
    txt2 = model.encode_text(longer, torch.cat([pad, torch.ones(3, 4, dtype=torch.bool)], 1))
    assert torch.allclose(txt, txt2, atol=1e-5)
    assert {"head.logit_scale", "encoder.cls_token"} <= model.no_weight_decay()


def test_coca_training_goes_through_the_models_forward():
    """compile=true compiles a model's forward (nn.Module.compile): CoCa's training step calls it with
    contrastive=True, which gives forward_contrastive's outputs, rather than forward_contrastive itself."""
    from tasks.captioning import CaptioningTask

    torch.manual_seed(0)
    model = create_captioner(encoder_preset=None, embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8,
                             vocab_size=50, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, max_len=16,
                             contrastive=True, unimodal_depth=1, joint_dim=24).eval()
    ids, pad = _tokens(2, 8, 50)
    images = torch.randn(2, 3, 32, 32)
    for a, b in zip(model(images, ids, pad, contrastive=True), model.forward_contrastive(images, ids, pad)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    calls = []
    model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs.get("contrastive")),
                                with_kwargs=True)
    batch = {"image": images, "tokens": ids, "padding_mask": pad, "num_truncated": torch.tensor(0)}
    loss = CaptioningTask(model, tokenizer=None, contrastive_weight=1.0).training_step(batch, 0)
    assert calls == [True] and loss.requires_grad


def test_logit_scale_is_capped_at_100():
    model = create_clip(**TINY, init_logit_scale=math.log(500.0))
    assert model.head.scale().item() == pytest.approx(100.0)


def test_coca_shapes_and_caption_path():
    torch.manual_seed(0)
    model = create_captioner(encoder_preset=None, embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8,
                             vocab_size=50, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, max_len=16,
                             contrastive=True, unimodal_depth=1, joint_dim=24).eval()
    assert isinstance(model, CoCa)
    assert not model.decoder.blocks[0].has_cross and model.decoder.blocks[1].has_cross
    ids, pad = _tokens(2, 8, 50)
    images = torch.randn(2, 3, 32, 32)
    logits, img, txt = model.forward_contrastive(images, ids, pad)
    assert logits.shape == (2, 8, 50) and img.shape == txt.shape == (2, 24)
    # The class token is appended after the text: the captioning logits are the captioner's own.
    assert torch.allclose(logits, model(images, ids, key_padding_mask=pad), atol=1e-5)
    assert torch.allclose(txt, model.encode_text(ids, pad), atol=1e-6)
    # Generation on the KV cache skips the text-only block's (absent) cross-attention cache.
    from mmtrans.generation import greedy_search

    ids_out = greedy_search(model.decoder, model.encode(images), 1, 2, max_new_tokens=4)
    assert len(ids_out) == 2
    for unimodal, depth in ((2, 2), (1, 1), (0, 2)):  # no cross-attending block left / no text-only block
        with pytest.raises(ValueError, match=rf"model.unimodal_depth={unimodal} .*model.decoder_depth={depth}\)"):
            create_captioner(encoder_preset=None, embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8,
                             vocab_size=50, decoder_embed_dim=32, decoder_depth=depth, decoder_num_heads=2,
                             contrastive=True, unimodal_depth=unimodal)


def test_contrastive_loss_equals_open_clip_clip_loss():
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    scale = torch.tensor(14.3)
    ours = contrastive_loss(img, txt, scale)
    assert ours.item() == pytest.approx(ClipLoss()(img, txt, scale).item(), abs=1e-6)


@pytest.mark.parametrize("n, k", [(8, 1), (6, 2), (5, 3)])
def test_chance_loss_is_the_loss_of_equal_logits(n, k):
    """The level a model that tells no image-text pair from another sits at: equal logits."""
    img, txt = torch.zeros(n, 16), torch.zeros(n * k, 16)
    loss = contrastive_loss(img, txt, torch.tensor(14.3), gather=False, texts_per_image=k)
    assert loss.item() == pytest.approx(contrastive_chance_loss(n, k), abs=1e-6)


def test_embeddings_and_logits_stay_float32_under_autocast():
    """trainer.precision=bf16-mixed (the GPU default): the towers run in bf16, but the embeddings
    come out in float32 and the loss's logits are computed in float32 (bf16's ~3 digits are the
    size of the gaps between cosine similarities that the temperature turns into the loss)."""
    torch.manual_seed(0)
    model = create_clip(**TINY)
    ids, pad = _tokens(4, 10, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img, txt, scale = model(torch.randn(4, 3, 32, 32), ids, pad)
        assert img.dtype == txt.dtype == torch.float32
        loss = contrastive_loss(img, txt, scale)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(contrastive_loss(img, txt, scale).item(), abs=1e-6)
    g = torch.Generator().manual_seed(1)  # bf16 inputs too: the same loss as their float32 values
    a, b = (torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1).bfloat16() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = contrastive_loss(a, b, torch.tensor(50.0))
    assert mixed.item() == pytest.approx(contrastive_loss(a.float(), b.float(), torch.tensor(50.0)).item(), abs=1e-6)


def test_multi_positive_loss():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)  # 2 captions per image
    logits = 5.0 * img @ txt.T
    i2t = -(logits.log_softmax(1).view(3, 3, 2)[torch.arange(3), torch.arange(3)]).mean(1)  # mean over own captions
    t2i = torch.nn.functional.cross_entropy(logits.T, torch.arange(3).repeat_interleave(2))
    expected = (i2t.mean() + t2i) / 2
    assert contrastive_loss(img, txt, torch.tensor(5.0), texts_per_image=2).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="texts_per_image=2"):
        contrastive_loss(img, txt[:5], torch.tensor(5.0), texts_per_image=2)


def test_parity_with_a_random_small_open_clip_clip(tmp_path):
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    # Heads as open_clip's released configs have them (width / 64), so the file alone says all.
    ref = open_clip.CLIP(
        embed_dim=64, vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=128, heads=2, layers=2),
    ).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong mapping shows
        for name, p in ref.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith(("ln_", "visual.ln_")):
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "open_clip.pt"
    torch.save(ref.state_dict(), path)
    model = create_clip(pretrained=str(path), img_size=32).eval()  # read without importing open_clip
    assert model.arch["pre_norm"] and model.arch["image_pool"] == "cls" and model.arch["text_num_heads"] == 2
    images = torch.randn(3, 3, 32, 32)
    ids, pad = _tokens(3, 16, 100, seed=1)
    with torch.no_grad():
        assert (model.encode_image(images) - ref.encode_image(images, normalize=True)).abs().max() < 1e-4
        assert (model.encode_text(ids, pad) - ref.encode_text(ids, normalize=True)).abs().max() < 1e-4
        assert model.head.scale().item() == pytest.approx(ref.logit_scale.exp().item())
    assert model.encoder.pretrained_cfg["mean"] == OPENAI_CLIP_MEAN
    # The same architecture read by hand, and the weights at another image size (table resampled).
    assert clip_kwargs_from_open_clip(ref.state_dict())["depth"] == 2
    assert create_clip(pretrained=str(path), img_size=48).encoder.pos_embed.shape == (1, 1 + 36, 64)
    # The weights bring their patch stem, whatever stem the config asks for training from scratch.
    assert create_clip(pretrained=str(path), img_size=32, stem="conv").encoder.stem_type == "patch"


def test_open_clip_by_name_offline_gives_the_local_file_route(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="Without network access.*model.pretrained=/path/to/clip.pt"):
        create_clip(pretrained="ViT-B-32", pretrained_tag="openai")
    with pytest.raises(ValueError, match="neither a weights file nor an open_clip model name"):
        create_clip(pretrained="no-such-clip")


def test_converter_refuses_other_state_dicts():
    with pytest.raises(ValueError, match="not an open_clip CLIP state dict"):
        clip_kwargs_from_open_clip({"conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected open_clip key"):
        convert_open_clip({"visual.conv1.weight": torch.zeros(1), "token_embedding.weight": torch.zeros(1),
                           "visual.whatever": torch.zeros(1)})
