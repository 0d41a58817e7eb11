"""Beam search over the decoder's KV cache, with Hugging Face semantics.

- A hypothesis scores ``sum(log p) / (length ** length_penalty)``; ``length`` counts the
  generated tokens (EOS included, prompt and BOS excluded).
- Each step looks at the ``2 * num_beams`` best continuations of every example. A candidate
  that is EOS (and ranks among the first ``num_beams``) closes a hypothesis; the best
  ``num_beams`` others stay live. Each example keeps its ``num_beams`` best hypotheses.
- An example is done when it has ``num_beams`` hypotheses and the worst of them scores at least
  the best live candidate at the current length (HF ``early_stopping=False``); at
  ``max_new_tokens`` the live beams join the hypotheses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .processors import ban_eos, ban_repeated_ngrams, next_token_logits, start_tokens

__all__ = ["beam_search"]


class _Hypotheses:
    """The ``num_beams`` best finished sequences of one example."""

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.items: list[tuple[float, list[int]]] = []

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = sum_logprobs / (max(len(tokens), 1) ** self.length_penalty)
        if len(self.items) < self.num_beams or score > self.items[-1][0]:
            self.items.append((score, tokens))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.num_beams:]

    def is_done(self, best_sum_logprobs: float, length: int) -> bool:
        if len(self.items) < self.num_beams:
            return False
        return self.items[-1][0] >= best_sum_logprobs / (length ** self.length_penalty)


@torch.no_grad()
def beam_search(
    decoder: nn.Module,
    context: Tensor | None,
    bos_id: int,
    eos_id: int,
    num_beams: int = 3,
    max_new_tokens: int = 32,
    min_new_tokens: int = 0,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    prompt: Tensor | None = None,
    num_return_sequences: int = 1,
    use_cache: bool = True,
) -> tuple[Tensor, Tensor]:
    """Returns ``(tokens [B * num_return_sequences, T], scores [B * num_return_sequences])``.

    Rows of one example are adjacent and best first. Tokens are the generated ones only (no
    BOS or prompt), EOS-padded; scores are length-normalised sums of log-probabilities.
    """
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"need 1 <= num_return_sequences <= num_beams, got {num_return_sequences}, {num_beams}")
    K = num_beams
    start = start_tokens(decoder, bos_id, context, prompt)
    B, device = start.shape[0], start.device
    tokens = start.repeat_interleave(K, dim=0)  # [B*K, S]; beams of one example are adjacent
    if context is not None:
        context = context.repeat_interleave(K, dim=0)  # once: cross K/V are cached per beam row
    cache = decoder.new_cache() if use_cache else None
    # Only beam 0 is live at first, so the first step does not pick K copies of one token.
    beam_scores = torch.full((B, K), -1e9, device=device)
    beam_scores[:, 0] = 0.0
    hyps = [_Hypotheses(K, length_penalty) for _ in range(B)]
    done = [False] * B
    new = tokens
    for step in range(max_new_tokens):
        logits = next_token_logits(decoder, tokens, new, context, cache)
        logp = logits.log_softmax(dim=-1)
        logp = ban_eos(logp, eos_id, step, min_new_tokens)
        logp = ban_repeated_ngrams(logp, tokens, no_repeat_ngram_size)
        V = logp.shape[-1]
        cand = (beam_scores.view(-1, 1) + logp).view(B, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)
        top_beam, top_tok = (top_idx // V).tolist(), (top_idx % V).tolist()
        top_scores_list = top_scores.tolist()
        generated = tokens[:, start.shape[1]:].tolist()

        next_scores, next_tok, next_beam = [], [], []
        for b in range(B):
            if done[b]:  # keep feeding finished examples (batched), their beams no longer matter
                next_scores.append([0.0] * K)
                next_tok.append([eos_id] * K)
                next_beam.append(list(range(K)))
                continue
            scores_b, tok_b, beam_b = [], [], []
            for rank, (score, beam, tok) in enumerate(zip(top_scores_list[b], top_beam[b], top_tok[b])):
                if tok == eos_id:
                    if rank < K:  # HF: an EOS outside the top num_beams does not close a hypothesis
                        hyps[b].add(generated[b * K + beam] + [eos_id], score)
                else:
                    scores_b.append(score)
                    tok_b.append(tok)
                    beam_b.append(beam)
                if len(tok_b) == K:
                    break
            next_scores.append(scores_b)
            next_tok.append(tok_b)
            next_beam.append(beam_b)
            done[b] = hyps[b].is_done(max(top_scores_list[b]), step + 1)

        beam_scores = torch.tensor(next_scores, dtype=beam_scores.dtype, device=device)
        rows = (torch.tensor(next_beam, device=device) + torch.arange(B, device=device)[:, None] * K).view(-1)
        new = torch.tensor(next_tok, dtype=torch.long, device=device).view(-1, 1)
        tokens = torch.cat([tokens.index_select(0, rows), new], dim=1)
        if cache is not None:
            cache.reorder(rows)
        if all(done):
            break

    generated = tokens[:, start.shape[1]:].tolist()
    final_scores = beam_scores.tolist()
    for b in range(B):
        if not done[b]:  # ran out of length: live beams compete with the finished ones
            for k in range(K):
                hyps[b].add(generated[b * K + k], final_scores[b][k])

    best = [item for h in hyps for item in h.items[:num_return_sequences]]
    T = max(len(seq) for _, seq in best)
    out = torch.full((len(best), T), eos_id, dtype=torch.long, device=device)
    for i, (_, seq) in enumerate(best):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out, torch.tensor([score for score, _ in best], device=device)
