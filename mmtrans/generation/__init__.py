"""Text generation over a decoder's KV cache: greedy, beam search, sampling (plain torch)."""

from .beam import beam_search
from .captions import caption_images
from .processors import ban_repeated_ngrams, strip_special, top_k_top_p_filter
from .search import greedy_search, sample

__all__ = ["ban_repeated_ngrams", "beam_search", "caption_images", "greedy_search", "sample", "strip_special", "top_k_top_p_filter"]
