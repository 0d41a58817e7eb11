"""Evaluation metrics (plain Python / torch; no Lightning)."""

from mmtrans.metrics.captioning import caption_scores, normalize_caption
from mmtrans.metrics.medical import bootstrap_ci, format_report, medical_metrics
from mmtrans.metrics.retrieval import retrieval_metrics, retrieval_ranks

__all__ = ["bootstrap_ci", "caption_scores", "format_report", "medical_metrics", "normalize_caption",
           "retrieval_metrics", "retrieval_ranks"]
