"""Small pieces shared by the decoding loops: start tokens, logit filters, output cleanup.

Every filter takes next-token scores ``[R, V]`` (logits or log-probs) and returns them with
forbidden tokens set to ``-inf``; rows are sequences (``R = B`` or ``B * num_beams``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ban_eos", "ban_repeated_ngrams", "next_token_logits", "start_tokens", "strip_special", "top_k_top_p_filter",
]


def start_tokens(decoder: nn.Module, bos_id: int, context: Tensor | None, prompt: Tensor | None) -> Tensor:
    """``[B, 1 + P]``: BOS followed by the optional ``prompt`` (which must not contain BOS)."""
    if prompt is not None:
        batch, device = prompt.shape[0], prompt.device
    elif context is not None:
        batch, device = context.shape[0], context.device
    else:
        param = next(decoder.parameters(), None)
        batch, device = 1, param.device if param is not None else torch.device("cpu")
    bos = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
    return bos if prompt is None else torch.cat([bos, prompt.to(device=device, dtype=torch.long)], dim=1)


def next_token_logits(decoder: nn.Module, tokens: Tensor, new: Tensor, context: Tensor | None, cache) -> Tensor:
    """Float logits ``[R, V]`` for the token after ``tokens``.

    With a cache only ``new`` (the tokens the cache has not seen) is fed; without one the
    whole prefix is recomputed (the reference path for tests and benchmarks).
    """
    if cache is None:
        return decoder(tokens, context=context)[:, -1].float()
    return decoder(new, context=context, cache=cache)[:, -1].float()


def ban_eos(scores: Tensor, eos_id: int, step: int, min_new_tokens: int) -> Tensor:
    """Forbid EOS while fewer than ``min_new_tokens`` tokens have been generated."""
    if step < min_new_tokens:
        scores = scores.clone()
        scores[:, eos_id] = float("-inf")
    return scores


def ban_repeated_ngrams(scores: Tensor, tokens: Tensor, n: int) -> Tensor:
    """Forbid any token that would complete an ``n``-gram already present in ``tokens`` ``[R, L]``.

    Same rule as Hugging Face's ``no_repeat_ngram_size`` (the whole sequence counts, prompt
    included), vectorised: compare every ``n-1`` window with the current suffix.
    """
    if n <= 0 or tokens.shape[1] < n:  # no complete n-gram seen yet
        return scores
    grams = tokens.unfold(1, n, 1)  # [R, L-n+1, n]
    if n == 1:
        match = torch.ones(grams.shape[:2], dtype=torch.bool, device=tokens.device)
    else:
        suffix = tokens[:, tokens.shape[1] - (n - 1):]  # [R, n-1]
        match = (grams[:, :, :-1] == suffix[:, None, :]).all(-1)  # [R, L-n+1]
    # scatter_add, not scatter: several windows can ban the same token.
    hits = torch.zeros_like(scores).scatter_add_(1, grams[:, :, -1], match.to(scores.dtype))
    return scores.masked_fill(hits > 0, float("-inf"))


def top_k_top_p_filter(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches ``top_p``.

    The most likely token always survives, so sampling never sees an all ``-inf`` row.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass *before* it already reaches top_p (keeps the crossing token).
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def strip_special(tokens: Tensor, eos_id: int, pad_id: int | None = None) -> list[list[int]]:
    """Cut each row at its first EOS (EOS excluded) and drop ``pad_id`` tokens."""
    out = []
    for row in tokens.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append([t for t in row if t != pad_id] if pad_id is not None else row)
    return out
