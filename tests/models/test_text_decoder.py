"""TextDecoder: GPT-2 parity (random tiny GPT2LMHeadModel), KV cache, errors; ImageCaptioner."""

import pytest
import torch
from safetensors.torch import save_file

from mmtrans.models import (
    TextDecoder,
    convert_gpt2,
    create_captioner,
    create_gpt2_decoder,
    decoder_kwargs_from_gpt2,
    load_gpt2_pretrained,
)

transformers = pytest.importorskip("transformers")

V, T = 100, 32


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=V, n_positions=T, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def _decoder(gpt2, **kw) -> TextDecoder:
    torch.manual_seed(1)
    dec = TextDecoder(**{**decoder_kwargs_from_gpt2(gpt2.config), **kw}).eval()
    converted = convert_gpt2(gpt2.state_dict(), dec)
    dec.load_state_dict(converted, strict=not dec.cross_attention)
    return dec


@torch.no_grad()
def test_gpt2_parity_without_cross_attention(gpt2):
    dec = _decoder(gpt2, cross_attention=False)
    tokens = torch.randint(0, V, (3, 20))
    assert (dec(tokens) - gpt2(tokens).logits).abs().max() < 1e-4
    assert dec.lm_head.weight is dec.tok_embed.weight


@torch.no_grad()
def test_cross_attention_is_a_noop_at_init(gpt2):
    dec = _decoder(gpt2, cross_attention=True, context_dim=48)
    tokens = torch.randint(0, V, (2, 12))
    logits = dec(tokens, torch.randn(2, 7, 48))
    assert (logits - gpt2(tokens).logits).abs().max() < 1e-4
    assert all(blk.cross_attn.proj.weight.abs().sum() == 0 for blk in dec.blocks)


@torch.no_grad()
def test_kv_cache_matches_full_forward_and_reorders():
    torch.manual_seed(0)
    dec = TextDecoder(V, max_len=T, embed_dim=32, depth=2, num_heads=4, context_dim=24).eval()
    for blk in dec.blocks:  # make cross-attention matter
        torch.nn.init.normal_(blk.cross_attn.proj.weight, std=0.1)
    tokens, ctx = torch.randint(0, V, (3, 10)), torch.randn(3, 5, 24)
    full = dec(tokens, ctx)
    cache = dec.new_cache()
    steps = [dec(tokens[:, :4], ctx, cache=cache)]  # prompt
    steps += [dec(tokens[:, i : i + 1], None, cache=cache) for i in range(4, 10)]  # context is cached
    assert len(cache) == 10
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5
    # beam search: rows reordered in the cache behave as the reordered batch
    cache = dec.new_cache()
    dec(tokens[:, :6], ctx, cache=cache)
    index = torch.tensor([2, 2, 0])
    cache.reorder(index)
    step = dec(tokens[index, 6:7], None, cache=cache)
    assert (step - full[index, 6:7]).abs().max() < 1e-5


@torch.no_grad()
def test_padding_mask_leaves_real_tokens_unchanged():
    torch.manual_seed(0)
    dec = TextDecoder(V, max_len=T, embed_dim=32, depth=2, num_heads=4, cross_attention=False).eval()
    tokens = torch.randint(0, V, (2, 8))
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[0, 5:] = True  # right padding: real tokens never see it (causal), logits stay finite
    out = dec(tokens, key_padding_mask=pad)
    assert torch.isfinite(out).all()
    assert (out[0, :5] - dec(tokens[:1, :5])[0]).abs().max() < 1e-5


def test_errors():
    dec = TextDecoder(V, max_len=8, embed_dim=32, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="length 9.*max_len=8"):
        dec(torch.zeros(1, 9, dtype=torch.long), torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="pass `context`"):
        dec(torch.zeros(1, 4, dtype=torch.long))
    cache = dec.new_cache()
    dec(torch.zeros(1, 6, dtype=torch.long), torch.randn(1, 3, 32), cache=cache)
    with pytest.raises(ValueError, match=r"cached 6 \+ new 3.*max_len=8"):
        dec(torch.zeros(1, 3, dtype=torch.long), cache=cache)


def test_optimizer_helpers():
    dec = TextDecoder(V, max_len=8, embed_dim=32, depth=3, num_heads=4)
    assert dec.num_layers == 4
    assert dec.layer_id("tok_embed.weight") == 0 and dec.layer_id("blocks.2.mlp.fc1.weight") == 3
    assert dec.layer_id("norm.weight") == 4 and "pos_embed.weight" in dec.no_weight_decay()


def test_load_local_folder_and_offline_hub_name(tmp_path, gpt2, monkeypatch):
    # hub layout: keys without "transformer.", no lm_head (tied), with legacy mask buffers
    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in gpt2.state_dict().items() if k != "lm_head.weight"}
    sd["h.0.attn.bias"] = torch.ones(1, 1, T, T)
    save_file(sd, str(tmp_path / "model.safetensors"))
    gpt2.config.to_json_file(str(tmp_path / "config.json"))
    dec = create_gpt2_decoder(str(tmp_path), cross_attention=False, max_len=16)  # position table cut to 16
    tokens = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        assert (dec.eval()(tokens) - gpt2(tokens).logits).abs().max() < 1e-4
    assert dec.lm_head.weight is dec.tok_embed.weight and dec.pos_embed.num_embeddings == 16
    bad = TextDecoder(V, max_len=T, embed_dim=32, depth=2, num_heads=4, cross_attention=False)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_gpt2_pretrained(bad, str(tmp_path))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="pass its local path"):
        load_gpt2_pretrained(dec, "gpt2")
    with pytest.raises(RuntimeError, match="pass its local path"):
        create_captioner(None, decoder_pretrained="gpt2", img_size=32, patch_size=8, embed_dim=32, depth=1,
                         num_heads=2)


def test_gpt2_captioner_is_rebuilt_from_its_recorded_arch_without_the_files(tmp_path, gpt2):
    """A checkpoint keeps model.decoder_arch; load_model nulls decoder_pretrained, so the
    decoder must come back with GPT-2's shapes from the record alone."""
    import shutil

    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in gpt2.state_dict().items() if k != "lm_head.weight"}
    folder = tmp_path / "gpt2"
    folder.mkdir()
    save_file(sd, str(folder / "model.safetensors"))
    gpt2.config.to_json_file(str(folder / "config.json"))
    small = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, max_len=16)
    built = create_captioner(None, decoder_pretrained=str(folder), **small)
    assert built.decoder.arch["embed_dim"] == gpt2.config.n_embd and built.decoder.arch["max_len"] == 16
    shutil.rmtree(folder)
    rebuilt = create_captioner(None, decoder_pretrained=None, decoder_arch=built.decoder.arch, **small)
    rebuilt.load_state_dict(built.state_dict())  # every key and shape fits
    assert rebuilt.decoder.lm_head.weight is rebuilt.decoder.tok_embed.weight


TINY_CAP = dict(
    vocab_size=V, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4, max_len=T, img_size=32, patch_size=8,
    embed_dim=48, depth=2, num_heads=2,
)


@pytest.mark.parametrize("projector", ["linear", "mlp", "none"])
def test_captioner_shapes(projector):
    model = create_captioner(None, projector=projector, **TINY_CAP)
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, V, (2, 7))
    ctx = model.encode(images)
    assert ctx.shape == (2, 17, 48 if projector == "none" else 32)  # cls + 4x4 patches
    assert model(images, tokens).shape == (2, 7, V)
    cache = model.new_cache()
    first = model.decode_step(tokens[:, :3], ctx, cache)
    assert first.shape == (2, 3, V) and len(cache) == 3


def test_captioner_frozen_encoder_and_prefixes():
    model = create_captioner(None, freeze_encoder=True, **TINY_CAP).train()
    assert not model.encoder.training and model.decoder.training
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, V, (2, 5))
    model(images, tokens).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.projector.parameters())
    prefixes = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert prefixes == {"encoder", "projector", "decoder"}
    assert "encoder.pos_embed" in model.no_weight_decay() and "decoder.pos_embed.weight" in model.no_weight_decay()
    with pytest.raises(ValueError, match="vocab_size is not set"):
        create_captioner(None, **{**TINY_CAP, "vocab_size": None})
