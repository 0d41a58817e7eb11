"""Pictures of what models do: caption grids, ViT attention heat maps and their overlays."""

from .attention_maps import (
    attention_maps,
    attention_rollout,
    heatmap_grid,
    last_layer_cls_attention,
    overlay_heatmap,
)
from .caption_grid import caption_grid
from .image_rows import image_rows

__all__ = [
    "attention_maps",
    "attention_rollout",
    "caption_grid",
    "heatmap_grid",
    "image_rows",
    "last_layer_cls_attention",
    "overlay_heatmap",
]
