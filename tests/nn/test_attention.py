"""Attention against a naive softmax reference for every mask kind, and the KV cache."""

import pytest
import torch

from mmtrans.nn import Attention, Block, BlockCache, build_attn_mask

torch.manual_seed(0)


def naive_attention(attn: Attention, x, context=None, allowed=None):
    """Textbook attention; ``allowed`` is a bool [B, Lq, Lk] mask (True = may attend)."""
    B, Lq, D = x.shape
    H, Dh = attn.num_heads, attn.head_dim
    if attn.cross:
        q = attn.q(x)
        k, v = attn.kv(context).chunk(2, dim=-1)
    else:
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
    split = lambda t: t.reshape(B, -1, H, Dh).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-2, -1) / Dh**0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    w = scores.softmax(-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B, Lq, D)), w


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["self", "cross", "causal", "padding", "bool_mask", "additive_mask", "causal+padding"])
def test_attention_matches_naive(kind, fused):
    B, L, Lc, D = 3, 7, 5, 32
    cross = kind == "cross"
    attn = Attention(D, num_heads=4, qkv_bias=True, cross=cross, context_dim=24 if cross else None, fused_attn=fused)
    attn.eval()
    x = torch.randn(B, L, D)
    context = torch.randn(B, Lc, 24) if cross else None
    Lk = Lc if cross else L
    kwargs, allowed = {}, torch.ones(B, L, Lk, dtype=torch.bool)
    pad = torch.zeros(B, Lk, dtype=torch.bool)
    pad[0, -2:] = True
    pad[2, -1] = True
    causal = torch.ones(L, Lk, dtype=torch.bool).tril()
    if kind == "causal":
        kwargs["is_causal"], allowed = True, allowed & causal
    if kind == "padding":
        kwargs["key_padding_mask"], allowed = pad, allowed & ~pad[:, None, :]
    if kind == "causal+padding":
        kwargs.update(is_causal=True, key_padding_mask=pad)
        allowed = allowed & causal & ~pad[:, None, :]
    if kind == "bool_mask":
        m = torch.rand(B, L, Lk) > 0.3
        m[..., 0] = True  # keep at least one key per row
        kwargs["attn_mask"], allowed = m, m
    if kind == "additive_mask":
        m = torch.rand(L, Lk) > 0.3
        m[:, 0] = True
        kwargs["attn_mask"] = torch.zeros(L, Lk).masked_fill(~m, float("-inf"))
        allowed = allowed & m
    out, w = attn(x, context, return_attn=True, **kwargs)
    out_fast = attn(x, context, **kwargs)
    ref, ref_w = naive_attention(attn, x, context, allowed)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)


def test_causal_mask_is_bottom_right_aligned_for_cached_queries():
    m = build_attn_mask(2, 5, is_causal=True)
    assert (m[0] == 0).tolist() == [True, True, True, True, False]
    assert (m[1] == 0).all()


def test_kv_cache_decoding_equals_full_causal_pass():
    """Feeding tokens one at a time through a cached decoder block == one causal pass."""
    D = 32
    blk = Block(D, 4, qkv_bias=True, cross_attention=True, context_dim=16).eval()
    x, ctx = torch.randn(2, 6, D), torch.randn(2, 9, 16)
    full = blk(x, context=ctx, is_causal=True)
    cache = BlockCache()
    steps = [blk(x[:, :3], context=ctx, is_causal=True, cache=cache)]  # prompt
    for t in range(3, 6):
        steps.append(blk(x[:, t:t + 1], context=ctx, is_causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache.self_attn) == 6 and len(cache.cross_attn) == 9
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.self_attn.k[0], cache.self_attn.k[1])


def test_cross_attention_without_context_is_a_clear_error():
    with pytest.raises(ValueError, match="context"):
        Attention(16, 2, cross=True)(torch.randn(1, 3, 16))


def test_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)
