"""Greedy decoding and sampling over the decoder's KV cache.

The decoder contract (``TextDecoder`` implements it)::

    decoder(tokens [B, L], context [B, N, D] | None = None, cache=None) -> logits [B, L, V]
    decoder.new_cache() -> cache with len(cache) and cache.reorder(index)

With a cache only the new tokens are passed; positions continue from ``len(cache)`` and the
cross-attention keys/values of ``context`` are computed on the first call and reused.
The caller puts the model in ``eval()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .processors import ban_eos, ban_repeated_ngrams, next_token_logits, start_tokens, top_k_top_p_filter

__all__ = ["greedy_search", "sample"]


def _decode(
    decoder: nn.Module,
    context: Tensor | None,
    bos_id: int,
    eos_id: int,
    pick: Callable[[Tensor], Tensor],
    max_new_tokens: int,
    min_new_tokens: int,
    no_repeat_ngram_size: int,
    prompt: Tensor | None,
    use_cache: bool,
) -> Tensor:
    """One token per row per step, chosen by ``pick(logits [B, V]) -> [B]``."""
    tokens = start_tokens(decoder, bos_id, context, prompt)
    cache = decoder.new_cache() if use_cache else None
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    new, generated = tokens, []
    for step in range(max_new_tokens):
        logits = next_token_logits(decoder, tokens, new, context, cache)
        logits = ban_eos(logits, eos_id, step, min_new_tokens)
        logits = ban_repeated_ngrams(logits, tokens, no_repeat_ngram_size)
        nxt = pick(logits).masked_fill(finished, eos_id)  # finished rows are padded with EOS
        generated.append(nxt)
        finished |= nxt == eos_id
        new = nxt[:, None]
        tokens = torch.cat([tokens, new], dim=1)
        if finished.all():
            break
    if not generated:
        return tokens.new_empty(tokens.shape[0], 0)
    return torch.stack(generated, dim=1)


@torch.no_grad()
def greedy_search(
    decoder: nn.Module,
    context: Tensor | None,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int = 32,
    min_new_tokens: int = 0,
    prompt: Tensor | None = None,
    use_cache: bool = True,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Most likely token at every step. Returns the generated tokens ``[B, T]`` (prompt not
    included), EOS-padded after a row finishes; stops once every row has emitted EOS.

    ``prompt`` ``[B, P]`` follows BOS (BOS is prepended here). ``use_cache=False`` recomputes
    the whole prefix each step (reference path).
    """
    return _decode(
        decoder, context, bos_id, eos_id, lambda logits: logits.argmax(dim=-1),
        max_new_tokens, min_new_tokens, no_repeat_ngram_size, prompt, use_cache,
    )


@torch.no_grad()
def sample(
    decoder: nn.Module,
    context: Tensor | None,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    min_new_tokens: int = 0,
    prompt: Tensor | None = None,
    use_cache: bool = True,
    no_repeat_ngram_size: int = 0,
) -> Tensor:
    """Ancestral sampling from ``softmax(logits / temperature)`` after top-k / top-p filtering.

    ``temperature=0`` means greedy. Pass a seeded ``generator`` (on the model's device) for
    reproducible samples. Output as :func:`greedy_search`.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")

    def pick(logits: Tensor) -> Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = top_k_top_p_filter(logits / temperature, top_k, top_p).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode(
        decoder, context, bos_id, eos_id, pick, max_new_tokens, min_new_tokens, no_repeat_ngram_size, prompt, use_cache,
    )
