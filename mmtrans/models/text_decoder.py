"""Causal text decoder (GPT-2 layout) on the shared ``Block``, with optional cross-attention.

token + position embeddings -> Blocks (causal self-attention, cross-attention on image
tokens, MLP) -> final LayerNorm -> LM head tied to the token embedding. Without
cross-attention it is GPT-2 exactly (see ``convert_gpt2.py``); with it, the cross-attention
output projections start at zero, so a pretrained language model is unchanged at init.
Incremental decoding keeps keys/values in a ``DecoderCache`` (one ``BlockCache`` per block).

The first ``unimodal_depth`` blocks may be text-only (no cross-attention): CoCa's text
encoder and multimodal decoder in one stack. ``forward_unimodal`` runs those blocks alone
(all blocks of a decoder without cross-attention: CLIP's text tower), optionally with extra
tokens appended after the text (a class token that pools it).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmtrans.nn import Block, BlockCache, get_act_layer

__all__ = ["DecoderCache", "TextDecoder"]


class DecoderCache:
    """Keys/values of every block for incremental decoding.

    ``len(cache)`` is the number of tokens already seen, i.e. the position of the next token.
    ``reorder(index)`` selects batch rows (beam search: ``index`` = surviving beams' rows).
    """

    def __init__(self, depth: int, first_cross_block: int = 0) -> None:
        self.blocks = [BlockCache() for _ in range(depth)]
        self.first_cross_block = first_cross_block  # text-only blocks come first and cache no context

    def __len__(self) -> int:
        return len(self.blocks[0].self_attn) if self.blocks else 0

    @property
    def has_context(self) -> bool:
        """True once the cross-attention keys/values (image tokens) are cached."""
        return len(self.blocks) > self.first_cross_block and self.blocks[self.first_cross_block].cross_attn.filled

    def reorder(self, index: Tensor) -> None:
        for blk in self.blocks:
            blk.reorder(index)


class TextDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        max_len: int = 1024,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        cross_attention: bool = True,
        context_dim: int | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        tie_weights: bool = True,
        norm_eps: float = 1e-5,
        unimodal_depth: int = 0,
        act_layer: str = "gelu_tanh",
    ) -> None:
        """``context_dim``: width of the cross-attention context (image tokens); ``None`` =
        ``embed_dim``. ``drop_rate`` applies to the embeddings and each residual branch.
        ``unimodal_depth``: with cross-attention, how many blocks come first without it (CoCa);
        without cross-attention every block is text-only. ``act_layer``: 'gelu_tanh' (GPT-2),
        'gelu' or 'quick_gelu' (CLIP's text towers)."""
        super().__init__()
        if cross_attention and not 0 <= unimodal_depth < depth:
            raise ValueError(f"unimodal_depth={unimodal_depth} must be in [0, depth={depth}) so that some blocks "
                             "cross-attend the image")
        self.grad_checkpointing = False
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embed_dim = embed_dim
        self.cross_attention = cross_attention
        self.context_dim = (context_dim or embed_dim) if cross_attention else None
        self.unimodal_depth = unimodal_depth if cross_attention else depth
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)

        self.tok_embed = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed = nn.Embedding(max_len, embed_dim)
        self.drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[i], act_layer=get_act_layer(act_layer), norm_layer=norm_layer,
                cross_attention=i >= self.unimodal_depth, context_dim=context_dim,
            )
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.tie_weights = tie_weights
        if tie_weights:
            self.lm_head.weight = self.tok_embed.weight
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 init: normal(0.02); residual projections scaled by 1/sqrt(2 * depth) (nanoGPT);
        cross-attention output projections zero, so each cross-attention starts as a no-op."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        resid_std = 0.02 / math.sqrt(2 * len(self.blocks))
        for blk in self.blocks:
            nn.init.normal_(blk.attn.proj.weight, std=resid_std)
            nn.init.normal_(blk.mlp.fc2.weight, std=resid_std)
            if blk.has_cross:
                nn.init.zeros_(blk.cross_attn.proj.weight)
                nn.init.zeros_(blk.cross_attn.proj.bias)

    # -- helpers used by optimisers and generation --------------------------------------------
    def no_weight_decay(self) -> set[str]:
        # Embedding tables are matrices, but GPT-2 recipes (and nanoGPT's position table) skip them.
        return {"pos_embed.weight"}

    def layer_id(self, name: str) -> int:
        """Depth index of a parameter for layer-wise lr decay: embeddings 0, block i -> i + 1,
        final norm / LM head on top (the tied LM head shares the embedding's id 0)."""
        if name.startswith(("tok_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1

    @property
    def num_layers(self) -> int:
        return len(self.blocks) + 1

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.blocks), self.unimodal_depth)

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        tokens: Tensor,
        context: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """``tokens`` ``[B, L]`` -> logits ``[B, L, V]``.

        ``context``: ``[B, N, Dc]`` image tokens (needed with cross-attention, except on
        cached steps once ``cache.has_context``). ``key_padding_mask``: bool, True = pad,
        covering every self-attention key: ``[B, L]``, or ``[B, len(cache) + L]`` with a cache.
        ``cache``: positions start at ``len(cache)`` and the cache is extended in place.
        """
        B, L = tokens.shape
        start = len(cache) if cache is not None else 0
        if start + L > self.max_len:
            raise ValueError(
                f"sequence length {start + L} (cached {start} + new {L}) exceeds the decoder's max_len={self.max_len}"
            )
        if self.cross_attention and context is None and not (cache is not None and cache.has_context):
            raise ValueError("this decoder has cross-attention: pass `context` (e.g. image tokens [B, N, D])")
        if not self.cross_attention and context is not None:
            raise ValueError("this decoder has no cross-attention (cross_attention=False) but got a `context`")
        x = self._embed(tokens, start)
        x = self._run_blocks(x, 0, len(self.blocks), context, key_padding_mask, context_padding_mask, cache)
        return self.lm_head(self.norm(x))

    def forward_unimodal(
        self, tokens: Tensor, key_padding_mask: Tensor | None = None, suffix: Tensor | None = None
    ) -> Tensor:
        """Hidden states ``[B, L + S, D]`` after the text-only blocks (before the final norm).

        ``suffix`` ``[B, S, D]``: tokens appended after the text with no position embedding
        (CoCa's class token): causal attention lets them see the whole text (padding masked)
        and no text token see them, so the text states are those without a suffix."""
        B, L = tokens.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds the decoder's max_len={self.max_len}")
        x = self._embed(tokens, 0)
        if suffix is not None:
            x = torch.cat([x, suffix.to(x.dtype)], dim=1)
            if key_padding_mask is not None:
                key_padding_mask = torch.cat([key_padding_mask, key_padding_mask.new_zeros(B, suffix.shape[1])], 1)
        return self._run_blocks(x, 0, self.unimodal_depth, None, key_padding_mask, None, None)

    def forward_multimodal(
        self, x: Tensor, context: Tensor, key_padding_mask: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, L, V]`` from the text states of ``forward_unimodal`` (suffix removed):
        the blocks with cross-attention on ``context``, the final norm and the LM head."""
        x = self._run_blocks(x, self.unimodal_depth, len(self.blocks), context, key_padding_mask,
                             context_padding_mask, None)
        return self.lm_head(self.norm(x))

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.drop(self.tok_embed(tokens) + self.pos_embed(pos))

    def _run_blocks(
        self, x: Tensor, first: int, last: int, context: Tensor | None, key_padding_mask: Tensor | None,
        context_padding_mask: Tensor | None, cache: DecoderCache | None,
    ) -> Tensor:
        # Recompute activations in backward (training without a cache only): less memory.
        recompute = self.grad_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for i in range(first, last):
            blk = self.blocks[i]
            kwargs = {"key_padding_mask": key_padding_mask, "is_causal": True,
                      "context_padding_mask": context_padding_mask,
                      "cache": cache.blocks[i] if cache is not None else None}
            x = checkpoint(blk, x, context, use_reentrant=False, **kwargs) if recompute else blk(x, context, **kwargs)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.no_grad()
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position table (nanoGPT's convention;
        the token table counts because it is also the LM head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_embed.weight.numel() if non_embedding else n
