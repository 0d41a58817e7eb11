"""Pictures of what models do: caption grids (attention maps come with the medical task)."""

from .caption_grid import caption_grid

__all__ = ["caption_grid"]
