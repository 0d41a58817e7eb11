"""One pre-norm transformer block for the encoder and the decoder.

``x = x + self_attn(norm1(x))``; optionally ``x = x + cross_attn(norm_cross(x), context)``;
``x = x + mlp(norm2(x))``. Cross-attention is a constructor option, not a subclass, so the
ViT encoder and the text decoder are made of the same module.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import Attention, KVCache
from .layers import DropPath, LayerScale, Mlp

__all__ = ["Block", "BlockCache"]


class BlockCache:
    """KV caches of one block: causal self-attention (grows) and cross-attention (static)."""

    def __init__(self) -> None:
        self.self_attn = KVCache()
        self.cross_attn = KVCache(static=True)

    def reorder(self, index) -> None:
        self.self_attn.reorder(index)
        self.cross_attn.reorder(index)


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        cross_attention: bool = False,
        context_dim: int | None = None,
        fused_attn: bool = True,
        locality_attn: bool = False,
    ) -> None:
        """``locality_attn``: LSA in the self-attention only (see ``Attention``)."""
        super().__init__()
        attn_kw = dict(
            num_heads=num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop,
            proj_drop=proj_drop, norm_layer=norm_layer, fused_attn=fused_attn,
        )

        def residual_extras() -> tuple[nn.Module, nn.Module]:
            ls = LayerScale(dim, init_values) if init_values else nn.Identity()
            return ls, DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, locality_attn=locality_attn, **attn_kw)
        self.ls1, self.drop_path1 = residual_extras()
        self.has_cross = cross_attention
        if cross_attention:
            self.norm_cross = norm_layer(dim)
            self.cross_attn = Attention(dim, cross=True, context_dim=context_dim, **attn_kw)
            self.ls_cross, self.drop_path_cross = residual_extras()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2, self.drop_path2 = residual_extras()

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        context_padding_mask: Tensor | None = None,
        cache: BlockCache | None = None,
        return_attn: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Returns ``x`` (and the self-attention weights ``[B, H, L, L]`` if ``return_attn``)."""
        y = self.attn(
            self.norm1(x), attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
            kv_cache=cache.self_attn if cache is not None else None, return_attn=return_attn,
        )
        y, weights = y if return_attn else (y, None)
        x = x + self.drop_path1(self.ls1(y))
        if self.has_cross:
            y = self.cross_attn(
                self.norm_cross(x), context, key_padding_mask=context_padding_mask,
                kv_cache=cache.cross_attn if cache is not None else None,
            )
            x = x + self.drop_path_cross(self.ls_cross(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, weights) if return_attn else x
