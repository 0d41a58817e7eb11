"""Build models by name: the entry points that configs point ``_target_`` at."""

from __future__ import annotations

from typing import Any

from .heads import ImageClassifier
from .pretrained import create_timm_model, is_weights_path, load_pretrained
from .vit import ARCH_KEYS, VisionTransformer, create_vit

__all__ = ["create_encoder", "create_image_classifier"]


def create_encoder(preset: str | None = "vit_tiny", pretrained: str | None = None, **kwargs: Any) -> VisionTransformer:
    """A ``VisionTransformer`` from a preset (or, with ``preset=None`` and a timm name as
    ``pretrained``, the timm model's architecture), optionally with pretrained weights."""
    # Unset architecture keys (null in YAML) mean "from the preset / the timm model".
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in ARCH_KEYS}
    if preset is None and pretrained and not is_weights_path(pretrained):
        from .convert_timm import vit_kwargs_from_timm

        # Building timm's model without weights needs no network; it tells us the architecture.
        kwargs = {**vit_kwargs_from_timm(create_timm_model(pretrained, pretrained=False)), **kwargs}
    elif preset is None and not kwargs:
        raise ValueError("give a model preset (e.g. 'vit_tiny') or a timm name as `pretrained`")
    encoder = create_vit(preset, **kwargs)
    if pretrained:
        load_pretrained(encoder, pretrained)
    return encoder


def create_image_classifier(
    preset: str | None = "vit_tiny",
    num_classes: int = 1000,
    pretrained: str | None = None,
    drop_rate: float = 0.0,
    **kwargs: Any,
) -> ImageClassifier:
    """ViT encoder + classification head. ``pretrained`` loads the encoder (and the head, when
    its class count matches) from a timm name or a local weights file."""
    if num_classes is None:
        raise ValueError("num_classes is not set (model.num_classes); it is normally taken from the data")
    model = ImageClassifier(create_encoder(preset, None, **kwargs), num_classes, drop_rate=drop_rate)
    if pretrained:
        load_pretrained(model, pretrained)
    return model
