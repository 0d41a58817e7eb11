"""Tokenizer training and loading for captions."""

from mmtrans.text.tokenizer import BOS, EOS, PAD, UNK, CaptionTokenizer

__all__ = ["BOS", "EOS", "PAD", "UNK", "CaptionTokenizer"]
