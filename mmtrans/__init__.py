"""mmtrans: one set of transformer blocks for a ViT encoder, a text decoder and heads."""

__version__ = "0.1.0"
