"""The one multi-head attention of mmtrans: self- and cross-attention, masks, KV cache.

Parameter names follow timm's ``Attention`` (``qkv``, ``q_norm``, ``k_norm``, ``proj``) so
that timm checkpoints map onto it without renaming. Cross-attention keeps separate ``q`` and
``kv`` projections because queries and keys come from different sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "KVCache", "build_attn_mask"]


class KVCache:
    """Keys and values of one attention layer, kept across decoding steps.

    Self-attention appends the new step's keys/values; cross-attention computes them once
    per image (``static=True``) and reuses them. ``reorder`` selects batch rows (beam search).
    Tensors are ``[B, H, L, Dh]``.
    """

    def __init__(self, static: bool = False) -> None:
        self.static = static
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    @property
    def filled(self) -> bool:
        return self.k is not None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None or self.static:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


def build_attn_mask(
    q_len: int,
    k_len: int,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor | None:
    """Merge the mask kinds into one additive float mask broadcastable to ``[B, H, Lq, Lk]``.

    - ``attn_mask``: bool (True = may attend, as in SDPA) or additive float, ``[Lq, Lk]``,
      ``[B, Lq, Lk]`` or ``[B, H, Lq, Lk]``.
    - ``key_padding_mask``: bool ``[B, Lk]``, True marks padding (as ``nn.MultiheadAttention``).
    - ``is_causal``: query ``i`` sees keys ``<= i + (Lk - Lq)``; aligned bottom-right so that
      decoding with a KV cache (fewer queries than keys) stays causal.
    Returns None when nothing is masked.
    """
    mask: Tensor | None = None
    neg = torch.finfo(dtype).min
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(~attn_mask, neg)
        else:
            mask = attn_mask.to(dtype)
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
    if is_causal:
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)
        causal = torch.zeros(q_len, k_len, dtype=dtype, device=device).masked_fill(~keep, neg)
        mask = causal if mask is None else mask + causal
    if key_padding_mask is not None:
        pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
        pad = pad.masked_fill(key_padding_mask, neg)[:, None, None, :]
        mask = pad if mask is None else mask + pad
    if mask is not None:
        # Sums of two large negatives overflow to -inf; clamp so fully masked rows stay finite.
        mask = mask.clamp(min=neg)
    return mask


class Attention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention``.

    ``cross=False``: fused ``qkv`` projection over ``x``. ``cross=True``: queries from ``x``,
    keys/values from ``context`` (width ``context_dim``). ``fused_attn=False`` or
    ``return_attn=True`` takes the explicit softmax path, which also returns the weights.

    ``locality_attn``: locality self-attention (LSA, Lee et al. 2021, "Vision Transformer for
    Small-Size Datasets"): a learned per-head scale ``lsa_scale`` (init ``head_dim**-0.5``, as
    the authors' code) and no token attends to itself (diagonal masked), which sharpens
    attention on small data. Encoder self-attention only: not with cross/causal/KV cache.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        proj_bias: bool = True,
        cross: bool = False,
        context_dim: int | None = None,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        fused_attn: bool = True,
        locality_attn: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if locality_attn and cross:
            raise ValueError("locality_attn=True is for self-attention; it cannot be combined with cross=True")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.cross = cross
        self.fused_attn = fused_attn
        self.locality_attn = locality_attn
        # Per head and learned directly, as in the authors' code (not in log space).
        self.lsa_scale = nn.Parameter(torch.full((num_heads,), self.scale)) if locality_attn else None
        if cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(context_dim or dim, dim * 2, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: Tensor) -> Tensor:  # [B, L, n*D] -> [n, B, H, L, Dh] is done by callers
        b, L, _ = t.shape
        return t.view(b, L, -1, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _project(self, x: Tensor, context: Tensor | None, kv_cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        if not self.cross:
            q, k, v = self._heads(self.qkv(x)).unbind(0)
            k = self.k_norm(k)
            if kv_cache is not None:
                k, v = kv_cache.update(k, v)
        else:
            q = self._heads(self.q(x))[0]
            if kv_cache is not None and kv_cache.filled:
                k, v = kv_cache.k, kv_cache.v  # image keys/values: computed once per image
            else:
                if context is None:
                    raise ValueError("cross-attention needs `context` (or a filled KV cache)")
                k, v = self._heads(self.kv(context)).unbind(0)
                k = self.k_norm(k)
                if kv_cache is not None:
                    kv_cache.update(k, v)
        return self.q_norm(q), k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        return_attn: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x``: ``[B, Lq, D]``; ``context``: ``[B, Lk, Dc]`` for cross-attention.

        Returns ``[B, Lq, D]``, and the ``[B, H, Lq, Lk]`` weights when ``return_attn``.
        """
        B, Lq, D = x.shape
        if self.locality_attn and (is_causal or kv_cache is not None):
            raise ValueError("locality_attn=True is for encoder self-attention: not with is_causal or a kv_cache")
        q, k, v = self._project(x, context, kv_cache)
        Lk = k.shape[2]
        explicit = return_attn or not self.fused_attn
        scale = self.scale
        if self.locality_attn:
            # Fold the learned per-head scale into q: SDPA's `scale=` takes only a float.
            q, scale = q * self.lsa_scale.view(1, -1, 1, 1).to(q.dtype), 1.0
        plain = attn_mask is None and key_padding_mask is None and not self.locality_attn
        if plain and (not is_causal or Lq == Lk) and not explicit:
            # Fast path: let SDPA pick flash / memory-efficient kernels (no materialised mask).
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=is_causal and Lq > 1
            )
            weights = None
        else:
            causal = is_causal and Lq > 1  # one query against a cache sees every cached key
            mask = build_attn_mask(Lq, Lk, attn_mask, key_padding_mask, causal, q.dtype, q.device)
            if self.locality_attn:
                # finfo.min, not -inf: its softmax weight is exactly 0, and a 1-token row stays finite.
                neg = torch.finfo(q.dtype).min
                eye = torch.eye(Lq, Lk, dtype=torch.bool, device=q.device)
                diag = torch.zeros(Lq, Lk, dtype=q.dtype, device=q.device).masked_fill(eye, neg)
                mask = diag if mask is None else (mask + diag).clamp(min=neg)
            if explicit:
                scores = (q * scale) @ k.transpose(-2, -1)
                if mask is not None:
                    scores = scores + mask
                weights = scores.softmax(dim=-1)
                out = self.attn_drop(weights) @ v
            else:
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=self.attn_drop.p if self.training else 0.0,
                    scale=1.0 if self.locality_attn else None,  # None: SDPA's default, as before LSA
                )
                weights = None
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, Lq, D)))
        return (out, weights) if return_attn else out
