"""Models built from the shared blocks: ViT encoder, text decoder, heads, captioner, converters."""

from .captioner import ImageCaptioner
from .clip import CoCa, ContrastiveModel, contrastive_chance_loss, contrastive_loss
from .cnn import CNNEncoder
from .convert_gpt2 import convert_gpt2, create_gpt2_decoder, decoder_kwargs_from_gpt2, load_gpt2_pretrained
from .convert_timm import convert_timm_vit, vit_kwargs_from_timm
from .factory import (
    create_captioner,
    create_clip,
    create_cnn_classifier,
    create_encoder,
    create_image_classifier,
    create_mae,
)
from .heads import ClassifierHead, ImageClassifier, head_outputs, pool_tokens
from .mae import MaskedAutoencoder, patchify, unpatchify
from .pretrained import load_pretrained, read_state_dict
from .text_decoder import DecoderCache, TextDecoder
from .vit import VIT_PRESETS, VisionTransformer, create_vit

__all__ = [
    "VIT_PRESETS", "CNNEncoder", "ClassifierHead", "CoCa", "ContrastiveModel", "DecoderCache", "ImageCaptioner", "ImageClassifier",
    "MaskedAutoencoder", "TextDecoder", "VisionTransformer", "convert_gpt2", "contrastive_chance_loss", "contrastive_loss", "convert_timm_vit", "create_captioner", "create_clip",
    "create_cnn_classifier", "create_encoder", "create_gpt2_decoder", "create_image_classifier", "create_mae",
    "create_vit", "decoder_kwargs_from_gpt2", "head_outputs", "load_gpt2_pretrained", "load_pretrained", "patchify",
    "pool_tokens", "read_state_dict", "unpatchify", "vit_kwargs_from_timm",
]
