"""Rows of images under titles: e.g. MAE's original / masked / reconstruction pictures."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["image_rows"]

_TITLE_H = 14


def image_rows(rows: dict[str, Tensor], cell: int = 96, pad: int = 2) -> Image.Image:
    """One row per entry (title -> ``[B, C, H, W]`` in [0, 1], C = 1 or 3), images resized to
    ``cell`` px with nearest neighbours so that patch edges stay sharp."""
    if not rows:
        raise ValueError("image_rows needs at least one row")
    counts = {len(v) for v in rows.values()}
    if len(counts) != 1:
        raise ValueError(f"every row needs the same number of images, got {sorted(counts)}")
    n = counts.pop()
    row_h = _TITLE_H + cell + pad
    grid = Image.new("RGB", (pad + n * (cell + pad), pad + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(grid)
    for r, (title, images) in enumerate(rows.items()):
        y = pad + r * row_h
        draw.text((pad + 2, y), title, fill="black")
        for i, image in enumerate(images):
            x = image.detach().float().cpu().clamp(0, 1)
            x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
            pic = Image.fromarray((x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")
            grid.paste(pic.resize((cell, cell), Image.NEAREST), (pad + i * (cell + pad), y + _TITLE_H))
    return grid
