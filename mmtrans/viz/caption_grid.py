"""A grid of images, each with its generated caption (and a reference) printed under it."""

from __future__ import annotations

import textwrap

import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["caption_grid", "tensor_to_pil"]


def tensor_to_pil(image: Tensor) -> Image.Image:
    """A normalised ``[C, H, W]`` tensor as an RGB picture (min-max stretched for display)."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return Image.fromarray((x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")


def caption_grid(
    images: list[Tensor | Image.Image], captions: list[str], references: list[str] | None = None,
    cell: int = 160, columns: int = 3, wrap: int = 26,
) -> Image.Image:
    """Images resized to ``cell`` px, captions (and first references, prefixed ``ref:``) below."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    lines_per = 6 if references else 3
    text_h = 12 * lines_per + 6
    rows = max(1, -(-len(images) // columns))
    grid = Image.new("RGB", (columns * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, cap) in enumerate(zip(images, captions)):
        pic = img if isinstance(img, Image.Image) else tensor_to_pil(img)
        x, y = (i % columns) * cell, (i // columns) * (cell + text_h)
        grid.paste(pic.convert("RGB").resize((cell, cell)), (x, y))
        text = textwrap.wrap(cap, wrap)[:3]
        if references:
            text += textwrap.wrap("ref: " + references[i], wrap)[:3]
        for j, line in enumerate(text):
            draw.text((x + 3, y + cell + 3 + 12 * j), line, fill="black" if j < 3 or not references else "gray")
    return grid
