"""Captions for a batch of images: encode once, search on the decoder's KV cache, decode."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .beam import beam_search
from .search import greedy_search

__all__ = ["caption_images"]


@torch.no_grad()
def caption_images(
    model: nn.Module, tokenizer: Any, images: Tensor, num_beams: int = 1, max_new_tokens: int = 30,
    length_penalty: float = 1.0, no_repeat_ngram_size: int = 0, min_new_tokens: int = 0,
) -> list[str]:
    """``model``: an ``ImageCaptioner`` (``encode`` + ``decoder``); ``tokenizer``: a
    ``CaptionTokenizer`` (bos/eos ids, ``decode_batch``). Beam search when ``num_beams > 1``."""
    context = model.encode(images)
    kw = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size)
    if num_beams > 1:
        ids, _ = beam_search(model.decoder, context, tokenizer.bos_id, tokenizer.eos_id, num_beams=num_beams,
                             length_penalty=length_penalty, **kw)
    else:
        ids = greedy_search(model.decoder, context, tokenizer.bos_id, tokenizer.eos_id, **kw)
    return tokenizer.decode_batch(ids)
