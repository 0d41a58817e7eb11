"""Models built from the shared blocks: ViT encoder, heads, converters."""

from .convert_timm import convert_timm_vit, vit_kwargs_from_timm
from .factory import create_encoder, create_image_classifier
from .heads import ClassifierHead, ImageClassifier, pool_tokens
from .pretrained import load_pretrained, read_state_dict
from .vit import VIT_PRESETS, VisionTransformer, create_vit

__all__ = [
    "VIT_PRESETS", "ClassifierHead", "ImageClassifier", "VisionTransformer", "convert_timm_vit", "create_encoder",
    "create_image_classifier", "create_vit", "load_pretrained", "pool_tokens", "read_state_dict",
    "vit_kwargs_from_timm",
]
