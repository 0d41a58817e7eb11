"""Where a ViT looks: attention rollout, last-layer class attention, overlays and grids.

``attention_rollout`` follows Abnar & Zuidema 2020 as implemented in jacobgil/vit-explain
(fuse heads, optionally discard the weakest weights, add the residual identity, re-normalise
rows, multiply through the layers), with two of that code's slips fixed: rows are
re-normalised row-wise (``keepdim``) and discarding works per image, not only on image 0.
All maps live on the token grid ``[B, gh, gw]`` and sum to 1; ``attention_maps`` runs a
``VisionTransformer`` and upsamples them to the input's size. Colours come from a small
hand-written colormap, so no matplotlib is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

if TYPE_CHECKING:
    from mmtrans.models.vit import VisionTransformer

__all__ = ["attention_maps", "attention_rollout", "heatmap_grid", "last_layer_cls_attention", "overlay_heatmap"]

_EPS = 1e-12


def _check_attns(attns: list[Tensor], num_prefix_tokens: int, grid_size: tuple[int, int]) -> None:
    if not attns:
        raise ValueError("attns is empty: run forward_features(x, return_attn=True) on a model with blocks")
    T = num_prefix_tokens + grid_size[0] * grid_size[1]
    for i, a in enumerate(attns):
        if a.dim() != 4 or a.shape[-1] != T or a.shape[-2] != T:
            raise ValueError(
                f"attns[{i}] has shape {tuple(a.shape)}; expected [B, heads, {T}, {T}] for "
                f"{num_prefix_tokens} prefix tokens and a {tuple(grid_size)} patch grid"
            )


def _read_patch_map(
    rows: Tensor, num_prefix_tokens: int, grid_size: tuple[int, int], class_token: bool
) -> Tensor:
    """``[B, T, T]`` token-to-token weights -> sum-normalised ``[B, gh, gw]`` patch map.

    With a class token its row is read (token 0: class first, then registers); without one
    (avg pooling) the pooled feature is the mean of the patch tokens, so their rows are
    averaged. Either way only patch columns are kept, which drops the register tokens.
    """
    P = num_prefix_tokens
    if class_token:
        if P < 1:
            raise ValueError("class_token=True needs num_prefix_tokens >= 1 (the class token comes first)")
        m = rows[:, 0, P:]
    else:
        m = rows[:, P:, P:].mean(dim=1)
    m = m.clamp(min=0)  # guards against -0.0 / rounding; weights are non-negative by construction
    m = m / m.sum(dim=-1, keepdim=True).clamp(min=_EPS)
    return m.reshape(m.shape[0], *grid_size)


def attention_rollout(
    attns: list[Tensor],
    num_prefix_tokens: int,
    grid_size: tuple[int, int],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    class_token: bool = True,
) -> Tensor:
    """Attention rollout over all blocks: ``[B, heads, T, T]`` per block -> ``[B, gh, gw]``.

    ``discard_ratio`` zeroes that fraction of the smallest fused weights among the columns of
    patch tokens; attention *to* prefix tokens (class, registers) is never discarded, since
    the class token collects the information being explained. ``class_token=False`` (models
    pooling the mean of patch tokens) reads the mean over patch-token rows.
    """
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    _check_attns(attns, num_prefix_tokens, grid_size)
    P = num_prefix_tokens
    B, _, T, _ = attns[0].shape
    eye = torch.eye(T, dtype=torch.float32, device=attns[0].device)
    result = eye.expand(B, T, T)
    for attn in attns:
        a = attn.detach().float()
        if head_fusion == "mean":
            a = a.mean(dim=1)
        elif head_fusion == "max":
            a = a.amax(dim=1)
        else:
            a = a.amin(dim=1)
        n_drop = int(T * (T - P) * discard_ratio)
        if n_drop > 0:
            patch_cols = a[:, :, P:].reshape(B, -1)  # per image: each has its own threshold
            idx = patch_cols.topk(n_drop, dim=-1, largest=False).indices
            patch_cols = patch_cols.scatter(-1, idx, 0.0)
            a = torch.cat([a[:, :, :P], patch_cols.reshape(B, T, T - P)], dim=-1)
        # Identity models the residual connection: half the signal skips the attention.
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True).clamp(min=_EPS)
        result = a @ result
    return _read_patch_map(result, P, grid_size, class_token)


def last_layer_cls_attention(
    attns: list[Tensor], num_prefix_tokens: int, grid_size: tuple[int, int], class_token: bool = True
) -> Tensor:
    """The last block's class-token attention to the patches, mean over heads: ``[B, gh, gw]``.

    ``class_token=False``: mean over the patch-token rows instead (as in ``attention_rollout``).
    """
    _check_attns(attns, num_prefix_tokens, grid_size)
    return _read_patch_map(attns[-1].detach().float().mean(dim=1), num_prefix_tokens, grid_size, class_token)


_METHODS: dict[str, Callable[..., Tensor]] = {"rollout": attention_rollout, "cls": last_layer_cls_attention}


def attention_maps(model: VisionTransformer, images: Tensor, method: str = "rollout", **kw: Any) -> Tensor:
    """Heat maps ``[B, H, W]`` at the size of ``images`` ``[B, C, H, W]``, each summing to 1.

    ``method``: 'rollout' (``kw``: ``head_fusion``, ``discard_ratio``) or 'cls' (last block).
    Runs in eval mode without gradients and restores every submodule's train/eval flag after.
    The class-token row is read unless the model pools the mean of patch tokens (or has no
    class token); then the patch rows are averaged, matching what the head actually sees.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    H, W = images.shape[-2:]
    # The grid follows the input, not the build size: dynamic_img_size models run at any size.
    grid = model.patch_embed.dynamic_grid((H, W))
    class_token = model.cls_token is not None and model.global_pool != "avg"
    param = next(model.parameters())
    # Per-module flags, not just model.training: a caller may keep e.g. a frozen part in eval.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            _, attns = model.forward_features(images.to(param.device, param.dtype), return_attn=True)
            maps = _METHODS[method](attns, model.num_prefix_tokens, grid, class_token=class_token, **kw)
    finally:
        for m, mode in modes:
            m.training = mode
    maps = F.interpolate(maps.unsqueeze(1), size=(H, W), mode="bilinear", align_corners=False).squeeze(1)
    # Bilinear weights are convex, so maps stay non-negative; their sum changes, so re-normalise.
    maps = maps / maps.sum(dim=(-2, -1), keepdim=True).clamp(min=_EPS)
    return maps.to(images.device)


# -- display ----------------------------------------------------------------------------------
def _jet(x: Tensor) -> Tensor:
    # Piecewise-linear approximation of matplotlib's "jet": blue -> cyan -> yellow -> red.
    return torch.stack([(1.5 - (4 * x - c).abs()).clamp(0, 1) for c in (3.0, 2.0, 1.0)])


def _hot(x: Tensor) -> Tensor:
    # Black -> red -> yellow -> white, as matplotlib's "hot".
    return torch.stack([(3 * x - c).clamp(0, 1) for c in (0.0, 1.0, 2.0)])


COLORMAPS: dict[str, Callable[[Tensor], Tensor]] = {"jet": _jet, "hot": _hot}


def _rgb01(image: Tensor) -> Tensor:
    """``[C, H, W]`` in [0, 1] (C = 1 or 3) -> float ``[3, H, W]``; grey is repeated, not tinted."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be [1 or 3, H, W], got shape {tuple(image.shape)}")
    x = image.detach().float().cpu().clamp(0, 1)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _to_pil(x: Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")


def overlay_heatmap(image: Tensor, heat: Tensor, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """Blend a coloured heat map ``[H, W]`` over an image ``[C, H, W]`` in [0, 1]: RGB picture.

    The heat map is min-max scaled for display only (maps sum to 1, so raw values are tiny).
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _rgb01(image)
    if heat.dim() != 2 or tuple(heat.shape) != tuple(rgb.shape[-2:]):
        raise ValueError(f"heat must be [H, W] = {tuple(rgb.shape[-2:])}, got shape {tuple(heat.shape)}")
    h = heat.detach().float().cpu()
    h = (h - h.min()) / (h.max() - h.min()).clamp(min=_EPS)
    return _to_pil((1 - alpha) * rgb + alpha * COLORMAPS[colormap](h))


_LINE = 12  # px per text line with PIL's default bitmap font (as in caption_grid)
_PAD = 4


def heatmap_grid(
    images: Tensor,
    heats: dict[str, Tensor],
    titles: list[str] | None = None,
    scale: int = 4,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> Image.Image:
    """One row per image: the input, then one overlay per method (column headers = ``heats`` keys).

    ``images``: ``[B, C, H, W]`` in [0, 1]; ``heats``: name -> ``[B, H, W]``; ``titles``: one
    line per row (e.g. "true: nodule | pred: nodule 0.93"). Pictures are enlarged ``scale``
    times with nearest resampling so that 28 px MedMNIST images stay crisp and visible.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if not heats:
        raise ValueError("heats is empty: pass at least one map, e.g. {'rollout': attention_maps(...)}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    B, _, H, W = images.shape
    for name, h in heats.items():
        if tuple(h.shape) != (B, H, W):
            raise ValueError(f"heats[{name!r}] has shape {tuple(h.shape)}; expected [B, H, W] = {(B, H, W)}")
    if titles is not None and len(titles) != B:
        raise ValueError(f"{B} images but {len(titles)} titles")
    cw, ch = W * scale, H * scale
    title_h = _LINE + 2 if titles is not None else 0
    row_h = title_h + ch + _PAD
    cols = ["input", *heats]
    grid = Image.new("RGB", (len(cols) * (cw + _PAD) + _PAD, _LINE + 4 + B * row_h), "white")
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(cols):
        draw.text((_PAD + j * (cw + _PAD) + 2, 2), name, fill="black")
    for i in range(B):
        y = _LINE + 4 + i * row_h
        if titles is not None:
            draw.text((_PAD + 2, y), titles[i], fill="black")
        pics = [_to_pil(_rgb01(images[i]))]
        pics += [overlay_heatmap(images[i], h[i], alpha, colormap) for h in heats.values()]
        for j, pic in enumerate(pics):
            grid.paste(pic.resize((cw, ch), Image.NEAREST), (_PAD + j * (cw + _PAD), y + title_h))
    return grid
