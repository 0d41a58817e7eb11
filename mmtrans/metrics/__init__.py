"""Evaluation metrics (plain Python / torch; no Lightning)."""

from mmtrans.metrics.captioning import caption_scores, normalize_caption

__all__ = ["caption_scores", "normalize_caption"]
