"""Position embeddings: learned tables (with 2-D resampling to new grids) and fixed sin-cos."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resample_pos_embed", "sincos_pos_embed_1d", "sincos_pos_embed_2d"]


def resample_pos_embed(
    posemb: Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> Tensor:
    """Resize a ``[1, P + h*w, D]`` table to a ``new_size`` grid; the ``P`` prefix rows are kept.

    Bicubic with antialiasing in fp32, as timm does, so converted checkpoints give the same
    numbers as timm at a new image size.
    """
    n_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.sqrt(n_grid))
        if side * side != n_grid:
            raise ValueError(f"cannot infer a square grid from {n_grid} position embeddings; pass old_size")
        old_size = (side, side)
    if tuple(old_size) == tuple(new_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim, dtype = grid.shape[-1], grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_size), mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1)


def sincos_pos_embed_1d(dim: int, positions: Tensor, temperature: float = 10000.0) -> Tensor:
    """``[len(positions), dim]`` table: sin on the first half of channels, cos on the second."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int], temperature: float = 10000.0) -> Tensor:
    """MAE-style fixed 2-D table ``[h*w, dim]``: half the channels encode rows, half columns.

    Being a function of the grid, it is recomputed (not interpolated) for a new image size.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    h, w = grid_size
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat(
        [sincos_pos_embed_1d(dim // 2, ys.flatten(), temperature), sincos_pos_embed_1d(dim // 2, xs.flatten(), temperature)],
        dim=1,
    )
