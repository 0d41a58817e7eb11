"""Shared transformer building blocks (plain torch)."""

from .attention import Attention, KVCache, build_attn_mask
from .block import Block, BlockCache
from .layers import ACT_LAYERS, DropPath, LayerScale, Mlp, QuickGELU, drop_path, get_act_layer
from .patch_embed import CONV_STEMS, STEMS, ConvStem, PatchEmbed, ShiftedPatchEmbed
from .pos_embed import resample_pos_embed, sincos_pos_embed_1d, sincos_pos_embed_2d

__all__ = [
    "ACT_LAYERS", "CONV_STEMS", "STEMS", "Attention", "Block", "BlockCache", "ConvStem", "DropPath", "KVCache", "LayerScale", "Mlp", "PatchEmbed",
    "QuickGELU", "ShiftedPatchEmbed", "get_act_layer",
    "build_attn_mask", "drop_path", "resample_pos_embed", "sincos_pos_embed_1d", "sincos_pos_embed_2d",
]
