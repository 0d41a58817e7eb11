"""Pictures of what models do: caption grids, ViT attention heat maps, CNN class activation
maps and their overlays."""

from .attention_maps import (
    attention_maps,
    attention_rollout,
    heatmap_grid,
    last_layer_cls_attention,
    overlay_heatmap,
)
from .cam import class_activation_maps, class_evidence_map
from .caption_grid import caption_grid
from .image_rows import image_rows

__all__ = [
    "attention_maps",
    "attention_rollout",
    "caption_grid",
    "class_activation_maps",
    "class_evidence_map",
    "heatmap_grid",
    "image_rows",
    "last_layer_cls_attention",
    "overlay_heatmap",
]
