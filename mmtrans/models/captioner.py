"""Image captioner: ViT encoder -> projector -> text decoder with cross-attention.

Parameters live under three prefixes, ``encoder.``, ``projector.`` and ``decoder.``, so a
training task can give the (pretrained) encoder its own learning rate or freeze it.
Generation (greedy, beam search) lives in ``mmtrans.generation`` and drives ``encode`` once
per image and ``decode_step`` once per token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .text_decoder import DecoderCache, TextDecoder

__all__ = ["PROJECTORS", "ImageCaptioner", "build_projector"]

PROJECTORS = ("linear", "mlp", "none")


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """Map image tokens to the decoder's context width. 'linear' and 'mlp' (LLaVA-1.5 style)
    start with a LayerNorm; 'none' passes tokens through (needs equal widths)."""
    if kind == "linear":
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
    if kind == "mlp":
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "none":
        if in_dim != out_dim:
            raise ValueError(f"projector='none' needs encoder width {in_dim} == decoder context width {out_dim}")
        return nn.Identity()
    raise ValueError(f"unknown projector {kind!r}; choose one of {PROJECTORS}")


class ImageCaptioner(nn.Module):
    def __init__(
        self, encoder: nn.Module, decoder: TextDecoder, projector: str = "linear", freeze_encoder: bool = False
    ) -> None:
        """``encoder`` needs ``forward_features(images) -> [B, N, De]`` and ``embed_dim``;
        ``decoder`` must have cross-attention. A frozen encoder stays in eval mode."""
        super().__init__()
        if not decoder.cross_attention:
            raise ValueError("the captioner's decoder needs cross_attention=True")
        self.encoder = encoder
        self.projector = build_projector(projector, encoder.embed_dim, decoder.context_dim)
        self.decoder = decoder
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> ImageCaptioner:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # no dropout / drop-path in a frozen encoder
        return self

    # -- helpers used by optimisers ---------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        enc = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") else set()
        return {f"encoder.{n}" for n in enc} | {f"decoder.{n}" for n in self.decoder.no_weight_decay()}

    # -- forward ----------------------------------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> decoder context ``[B, N, D_ctx]`` (all encoder tokens)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            feats = self.encoder.forward_features(images)
        return self.projector(feats)

    def forward(
        self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Teacher forcing: logits ``[B, L, V]`` for caption ``tokens`` ``[B, L]`` (True in
        ``key_padding_mask`` = pad)."""
        return self.decoder(tokens, self.encode(images), key_padding_mask=key_padding_mask)

    def new_cache(self) -> DecoderCache:
        return self.decoder.new_cache()

    def decode_step(
        self, tokens: Tensor, context: Tensor | None, cache: DecoderCache, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Logits ``[B, L, V]`` for the new ``tokens``, extending ``cache``; ``context`` is read
        on the first step only (its keys/values are cached), so later steps may pass None."""
        return self.decoder(tokens, context, key_padding_mask=key_padding_mask, cache=cache)
