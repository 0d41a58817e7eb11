"""Vision Transformer encoder (Dosovitskiy et al. 2020) on the shared ``Block``.

Returns token features ``[B, P + N, D]`` (``P`` prefix tokens: class + registers); heads
and decoders consume them. Parameter names match timm's ``VisionTransformer`` (minus the
classifier), so timm checkpoints convert by key filtering (see ``convert_timm.py``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmtrans.nn import CONV_STEMS, STEMS, Block, resample_pos_embed, sincos_pos_embed_2d

__all__ = ["VIT_PRESETS", "VisionTransformer", "auto_patch_size", "create_vit"]

# Architecture presets (patch 16, as in the ViT/DeiT papers). Any argument can be overridden.
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
}

ARCH_KEYS = ("patch_size", "embed_dim", "depth", "num_heads", "stem_depth")
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)  # timm's augreg ViTs normalise to [-1, 1]
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


def auto_patch_size(img_size: int | tuple[int, int]) -> int:
    """The patch size for an image size when none is given: the largest of 16, 8, 4, 2 that
    divides the image into a grid of at least 7 patches per side (4 at 28 px, 4 at 32, 8 at
    64, 16 at 128 and 224), so small images keep enough tokens to attend over."""
    sides = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    for p in (16, 8, 4, 2):
        if all(s % p == 0 and s // p >= 7 for s in sides):
            return p
    return 1


class VisionTransformer(nn.Module):
    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pos_embed: str = "learn",
        pre_norm: bool = False,
        final_norm: bool = True,
        global_pool: str = "cls",
        fc_norm: bool | None = None,
        dynamic_img_size: bool = False,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] | None = None,
        fused_attn: bool = True,
        stem: str = "patch",
        stem_depth: int = 1,
        locality_attn: bool = False,
    ) -> None:
        """``global_pool``: 'cls' (class token), 'avg' (mean of patch tokens) or 'none'.

        ``fc_norm=None`` follows timm: with 'avg' pooling the final norm moves after pooling
        (into the head), so ``self.norm`` is Identity and ``use_fc_norm`` tells the head.
        ``pos_embed``: 'learn' (table, resampled for new sizes), 'sincos' (fixed) or 'none'.

        For small data sets (``mmtrans.nn.patch_embed``, ``Attention``): ``stem`` 'patch'
        (one strided conv, timm's), 'conv' (conv stem, Xiao et al. 2021), 'conv_pool' (its convs at
        stride 1, each followed by a max-pool: CCT's tokenizer) or 'spt' (shifted
        patch tokenization, Lee et al. 2021); ``stem_depth``: conv layers per stage of the conv
        stems (1: one per halving of the grid, the paper's; k adds k-1 stride-1 3x3 convs at each
        resolution); ``locality_attn``: locality self-attention (LSA).
        Both keep the token grid ``img_size // patch_size``; the stem stays ``patch_embed``.
        """
        super().__init__()
        global_pool = {"token": "cls", "": "none"}.get(global_pool, global_pool)
        if global_pool not in ("cls", "avg", "none"):
            raise ValueError(f"global_pool must be 'cls', 'avg' or 'none', got {global_pool!r}")
        if global_pool == "cls" and not class_token:
            raise ValueError("global_pool='cls' needs class_token=True")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}, got {stem!r}")
        if pos_embed not in ("learn", "sincos", "none"):
            raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'none', got {pos_embed!r}")
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        self.global_pool = global_pool
        self.use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.embed_dim = self.num_features = embed_dim
        self.in_chans = in_chans
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False
        self.pretrained_cfg: dict[str, Any] = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)

        self.stem_type = stem
        conv_stem = stem in CONV_STEMS
        if stem_depth != 1 and not conv_stem:
            raise ValueError(f"stem_depth={stem_depth} needs stem='conv' or 'conv_pool', got stem={stem!r} "
                             "(it has no conv layers: set stem_depth=1)")
        self.patch_embed = STEMS[stem](
            img_size, patch_size, in_chans, embed_dim, bias=not pre_norm, strict_img_size=not dynamic_img_size,
            **({"depth": stem_depth} if conv_stem else {}),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed_type = pos_embed
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.Sequential(*[
            Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[i], init_values=init_values, act_layer=act_layer,
                norm_layer=norm_layer, fused_attn=fused_attn, locality_attn=locality_attn,
            )
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim) if final_norm and not self.use_fc_norm else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """timm's default init: truncated normal 0.02 for tables and linears, tiny prefix tokens."""
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for tok in (self.cls_token, self.reg_token):
            if tok is not None:
                nn.init.normal_(tok, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- helpers used by optimisers and converters -------------------------------------------
    def no_weight_decay(self) -> set[str]:
        # The LSA scale is a softmax temperature: decaying it toward 0 would flatten attention.
        lsa = {f"blocks.{i}.attn.lsa_scale" for i, b in enumerate(self.blocks) if b.attn.lsa_scale is not None}
        return {"pos_embed", "cls_token", "reg_token"} | lsa

    def layer_id(self, name: str) -> int:
        """Depth index of a parameter for layer-wise lr decay: embeddings (any stem) 0, block i -> i + 1."""
        if name.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # -- forward ----------------------------------------------------------------------------
    def _pos_table(self, grid: tuple[int, int]) -> Tensor | None:
        if self.pos_embed_type == "sincos":
            table = sincos_pos_embed_2d(self.embed_dim, grid).to(self.patch_embed.proj.weight)
            return table.unsqueeze(0)
        if self.pos_embed is None or grid == self.patch_embed.grid_size:
            return self.pos_embed
        return resample_pos_embed(
            self.pos_embed, grid, self.patch_embed.grid_size, 0 if self.no_embed_class else self.num_prefix_tokens
        )

    def _tokens(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image -> (patch tokens with position ``[B, N, D]``, prefix tokens with theirs
        ``[B, P, D]`` or None), kept apart so that a masked encoder can drop patches first."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[-2:]))
        x = self.patch_embed(x)
        tokens = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        prefix = torch.cat(tokens, dim=1) if tokens else None
        pos = self._pos_table(grid)
        if pos is not None and (self.no_embed_class or self.pos_embed_type == "sincos"):
            x = x + pos  # table covers patches only; prefix tokens carry no position
        elif pos is not None:
            n = self.num_prefix_tokens
            x = x + pos[:, n:]
            prefix = prefix + pos[:, :n] if prefix is not None else None
        return x, prefix

    def _join(self, patches: Tensor, prefix: Tensor | None) -> Tensor:
        x = patches if prefix is None else torch.cat([prefix, patches], dim=1)
        return self.norm_pre(self.pos_drop(x))

    def embed(self, x: Tensor) -> Tensor:
        """Image ``[B, C, H, W]`` -> tokens with prefix and position: ``[B, P + N, D]``."""
        return self._join(*self._tokens(x))

    def forward_features(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Token features after the final norm; with ``return_attn`` also each block's
        attention weights ``[B, H, T, T]`` (explicit softmax path, for heat maps)."""
        return self.forward_tokens(self.embed(x), return_attn)

    def forward_masked(self, x: Tensor, ids_keep: Tensor) -> Tensor:
        """Features of the patches ``ids_keep`` ``[B, K]`` only (MAE's encoder): position is
        added before the others are dropped, so each kept token knows where it came from.
        Returns ``[B, P + K, D]``, prefix tokens first, kept patches in ``ids_keep`` order."""
        patches, prefix = self._tokens(x)
        patches = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return self.forward_tokens(self._join(patches, prefix))

    def forward_tokens(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Embedded tokens ``[B, T, D]`` through the blocks and the final norm."""
        attns: list[Tensor] = []
        for blk in self.blocks:
            if return_attn:
                x, w = blk(x, return_attn=True)
                attns.append(w)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = self.norm(x)
        return (x, attns) if return_attn else x

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


def create_vit(preset: str | None = None, **kwargs: Any) -> VisionTransformer:
    """Build a ``VisionTransformer`` from a named preset plus overrides (``None``: kwargs only).

    An override of ``None`` for a preset's own key keeps the preset's value, so a config can
    list ``depth: null`` and a user can still write ``model.depth=6``.
    """
    if preset is None:
        return VisionTransformer(**{k: v for k, v in kwargs.items() if v is not None or k not in ARCH_KEYS})
    if preset not in VIT_PRESETS:
        raise ValueError(f"unknown ViT preset {preset!r}; choose one of {sorted(VIT_PRESETS)}")
    base = VIT_PRESETS[preset]
    return VisionTransformer(**{**base, **{k: v for k, v in kwargs.items() if v is not None or k not in (*base, *ARCH_KEYS)}})
