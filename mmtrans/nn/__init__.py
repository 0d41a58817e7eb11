"""Shared transformer building blocks (plain torch)."""

from .attention import Attention, KVCache, build_attn_mask
from .block import Block, BlockCache
from .layers import DropPath, LayerScale, Mlp, drop_path
from .patch_embed import STEMS, ConvStem, PatchEmbed, ShiftedPatchEmbed
from .pos_embed import resample_pos_embed, sincos_pos_embed_1d, sincos_pos_embed_2d

__all__ = [
    "STEMS", "Attention", "Block", "BlockCache", "ConvStem", "DropPath", "KVCache", "LayerScale", "Mlp", "PatchEmbed",
    "ShiftedPatchEmbed",
    "build_attn_mask", "drop_path", "resample_pos_embed", "sincos_pos_embed_1d", "sincos_pos_embed_2d",
]
