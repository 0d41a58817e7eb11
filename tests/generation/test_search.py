"""Greedy, beam search and sampling on a tiny cached decoder and on hand-checkable tables."""

import math

import pytest
import torch
from torch import nn

from mmtrans.generation import (
    ban_repeated_ngrams,
    beam_search,
    greedy_search,
    sample,
    strip_special,
    top_k_top_p_filter,
)
from mmtrans.nn import Block, BlockCache

BOS, EOS, A, B, C = 0, 1, 2, 3, 4


class ToyCache:
    def __init__(self, depth: int) -> None:
        self.blocks = [BlockCache() for _ in range(depth)]

    def __len__(self) -> int:
        return len(self.blocks[0].self_attn)

    def reorder(self, index) -> None:
        for blk in self.blocks:
            blk.reorder(index)


class ToyDecoder(nn.Module):
    """Embeddings + one causal cross-attention Block + linear head, with a real KV cache."""

    def __init__(self, vocab: int = 11, dim: int = 16, context_dim: int = 8, max_len: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([Block(dim, 2, cross_attention=True, context_dim=context_dim)])
        self.head = nn.Linear(dim, vocab)

    def new_cache(self) -> ToyCache:
        return ToyCache(len(self.blocks))

    def forward(self, tokens, context=None, cache=None):
        start = len(cache) if cache is not None else 0
        x = self.tok(tokens) + self.pos(torch.arange(start, start + tokens.shape[1]))
        for i, blk in enumerate(self.blocks):
            x = blk(x, context, is_causal=True, cache=cache.blocks[i] if cache is not None else None)
        return self.head(x) * 3.0  # sharper distributions: fewer near-ties in argmax


class CountCache:
    def __init__(self) -> None:
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def reorder(self, index) -> None:
        pass  # the table has no per-row state


class TableDecoder(nn.Module):
    """Next-token log-probs depend only on the last token: ``table[last]``. Ignores context."""

    def __init__(self, rows: dict[int, dict[int, float]], vocab: int = 5) -> None:
        super().__init__()
        table = torch.full((vocab, vocab), 1e-6)
        for prev, nxt in rows.items():
            for tok, p in nxt.items():
                table[prev, tok] = p
        self.register_buffer("logp", (table / table.sum(1, keepdim=True)).log())

    def new_cache(self) -> CountCache:
        return CountCache()

    def forward(self, tokens, context=None, cache=None):
        if cache is not None:
            cache.n += tokens.shape[1]
        return self.logp[tokens]


# Greedy takes A (0.5) then EOS (0.3): p = 0.15. The best caption is B EOS: 0.4 * 0.9 = 0.36.
TABLE = {
    BOS: {A: 0.5, B: 0.4, C: 0.1},
    A: {EOS: 0.3, B: 0.26, C: 0.24, A: 0.2},
    B: {EOS: 0.9, A: 0.1 / 3, B: 0.1 / 3, C: 0.1 / 3},
    C: {EOS: 0.9, A: 0.1 / 3, B: 0.1 / 3, C: 0.1 / 3},
}


def table_logp(seq):
    logp, prev = 0.0, BOS
    for tok in seq:
        logp += math.log(TABLE[prev].get(tok, 1e-6))
        prev = tok
    return logp


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return ToyDecoder().eval(), torch.randn(3, 5, 8)


def test_cached_greedy_equals_uncached(toy):
    model, ctx = toy
    cached = greedy_search(model, ctx, BOS, EOS, max_new_tokens=12)
    full = greedy_search(model, ctx, BOS, EOS, max_new_tokens=12, use_cache=False)
    assert cached.shape[0] == 3 and torch.equal(cached, full)
    prompt = torch.tensor([[5, 6], [7, 8], [9, 10]])
    assert torch.equal(
        greedy_search(model, ctx, BOS, EOS, 8, prompt=prompt),
        greedy_search(model, ctx, BOS, EOS, 8, prompt=prompt, use_cache=False),
    )


def test_greedy_pads_with_eos_and_stops_early():
    table = TableDecoder(TABLE)
    out = greedy_search(table, torch.zeros(2, 1, 1), BOS, EOS, max_new_tokens=10)
    assert out.tolist() == [[A, EOS], [A, EOS]]
    assert greedy_search(table, None, BOS, EOS, max_new_tokens=0).shape == (1, 0)


def test_beam_of_one_equals_greedy(toy):
    model, ctx = toy
    greedy = greedy_search(model, ctx, BOS, EOS, max_new_tokens=12)
    tokens, scores = beam_search(model, ctx, BOS, EOS, num_beams=1, max_new_tokens=12)
    assert torch.equal(tokens, greedy) and scores.shape == (3,)


def test_beam_cached_equals_uncached(toy):
    model, ctx = toy
    t1, s1 = beam_search(model, ctx, BOS, EOS, num_beams=3, max_new_tokens=10, num_return_sequences=2)
    t2, s2 = beam_search(model, ctx, BOS, EOS, num_beams=3, max_new_tokens=10, num_return_sequences=2,
                         use_cache=False)
    assert t1.shape[0] == 6 and torch.equal(t1, t2)
    torch.testing.assert_close(s1, s2)
    assert (s1.view(3, 2)[:, 0] >= s1.view(3, 2)[:, 1]).all()  # best first within an example


def test_beam_finds_better_sequence_than_greedy():
    table = TableDecoder(TABLE)
    ctx = torch.zeros(2, 1, 1)
    assert greedy_search(table, ctx, BOS, EOS).tolist()[0] == [A, EOS]
    tokens, scores = beam_search(table, ctx, BOS, EOS, num_beams=2, num_return_sequences=2)
    # Step 3's A-B-EOS (0.117 over 3 tokens) beats A-EOS (0.15 over 2) once length-normalised.
    assert tokens.tolist() == [[B, EOS, EOS], [A, B, EOS]] * 2
    expected = [table_logp([B, EOS]) / 2, table_logp([A, B, EOS]) / 3] * 2
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_length_penalty_changes_ranking():
    table = TableDecoder(TABLE)
    tokens, scores = beam_search(table, None, BOS, EOS, num_beams=2, num_return_sequences=2, length_penalty=0.0)
    # Raw sums prefer the short A-EOS (log 0.15) over A-B-EOS (log 0.117).
    assert tokens.tolist() == [[B, EOS], [A, EOS]]
    torch.testing.assert_close(scores, torch.tensor([math.log(0.36), math.log(0.15)]))


def test_min_new_tokens_blocks_eos():
    table = TableDecoder(TABLE)
    assert greedy_search(table, None, BOS, EOS, min_new_tokens=2).tolist() == [[A, B, EOS]]
    tokens, scores = beam_search(table, None, BOS, EOS, num_beams=2, min_new_tokens=2)
    assert tokens.tolist() == [[A, B, EOS]]
    torch.testing.assert_close(scores, torch.tensor([table_logp([A, B, EOS]) / 3]))


def test_no_repeat_ngram():
    loop = TableDecoder({BOS: {A: 0.6, B: 0.4}, A: {A: 0.5, B: 0.3, EOS: 0.2}, B: {A: 0.6, EOS: 0.4}})
    assert greedy_search(loop, None, BOS, EOS, max_new_tokens=6).tolist() == [[A] * 6]
    # (A, A) and then (A, B) have been seen, so A is followed by EOS the third time.
    out = greedy_search(loop, None, BOS, EOS, max_new_tokens=8, no_repeat_ngram_size=2)
    assert out.tolist() == [[A, A, B, A, EOS]]
    tokens, _ = beam_search(loop, None, BOS, EOS, num_beams=2, max_new_tokens=8, no_repeat_ngram_size=2)
    seq = strip_special(tokens, EOS)[0]
    bigrams = list(zip([BOS] + seq, seq))
    assert len(bigrams) == len(set(bigrams))


def test_ban_repeated_ngrams_unit():
    toks, scores = torch.tensor([[1, 2, 3, 1, 2]]), torch.zeros(1, 6)
    banned = lambda n: torch.isinf(ban_repeated_ngrams(scores, toks, n))[0].nonzero().flatten().tolist()  # noqa: E731
    assert banned(3) == [3] and banned(2) == [3] and banned(1) == [1, 2, 3] and banned(0) == []
    assert banned(6) == []  # longer than the sequence: nothing to repeat


def test_sampling_top_k_one_and_zero_temperature_are_greedy(toy):
    model, ctx = toy
    greedy = greedy_search(model, ctx, BOS, EOS, max_new_tokens=10)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(sample(model, ctx, BOS, EOS, 10, top_k=1, generator=g), greedy)
    assert torch.equal(sample(model, ctx, BOS, EOS, 10, temperature=1e-4, generator=g), greedy)
    assert torch.equal(sample(model, ctx, BOS, EOS, 10, temperature=0.0), greedy)


def test_sampling_is_reproducible_with_a_seeded_generator(toy):
    model, ctx = toy
    run = lambda seed: sample(model, ctx, BOS, EOS, 10, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not all(torch.equal(run(3), run(s)) for s in range(4, 9))


def test_top_p_filters():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(top_k_top_p_filter(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.01) == [True, False, False, False]
    assert torch.isfinite(top_k_top_p_filter(logits, top_k=2))[0].tolist() == [True, True, False, False]
    # On the table: after BOS only A (0.5) survives top_p=0.45; after A only EOS (0.3) and B (0.26).
    table = TableDecoder(TABLE)
    out = sample(table, torch.zeros(64, 1, 1), BOS, EOS, 2, top_p=0.45, generator=torch.Generator().manual_seed(0))
    assert (out[:, 0] == A).all() and set(out[:, 1].tolist()) == {EOS, B}


def test_strip_special():
    toks = torch.tensor([[5, 6, EOS, EOS], [7, 0, 8, 9], [EOS, EOS, EOS, EOS]])
    assert strip_special(toks, EOS) == [[5, 6], [7, 0, 8, 9], []]
    assert strip_special(toks, EOS, pad_id=0) == [[5, 6], [7, 8, 9], []]


def test_text_decoder_cached_equals_uncached():
    from mmtrans.models.text_decoder import TextDecoder

    torch.manual_seed(0)
    dec = TextDecoder(vocab_size=50, embed_dim=32, depth=2, num_heads=2, max_len=64, cross_attention=True,
                      context_dim=16).eval()
    with torch.no_grad():  # default init leaves cross-attention a no-op and logits nearly flat
        for m in dec.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3)
    ctx = torch.randn(3, 7, 16)
    cached = greedy_search(dec, ctx, BOS, EOS, max_new_tokens=16)
    assert torch.equal(cached, greedy_search(dec, ctx, BOS, EOS, max_new_tokens=16, use_cache=False))
    assert not torch.equal(cached[0], cached[1])  # the context matters
    t1, s1 = beam_search(dec, ctx, BOS, EOS, num_beams=3, max_new_tokens=12)
    t2, s2 = beam_search(dec, ctx, BOS, EOS, num_beams=3, max_new_tokens=12, use_cache=False)
    assert torch.equal(t1, t2)
    torch.testing.assert_close(s1, s2)
