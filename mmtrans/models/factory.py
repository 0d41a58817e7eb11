"""Build models by name: the entry points that configs point ``_target_`` at."""

from __future__ import annotations

from typing import Any

from .captioner import ImageCaptioner
from .cnn import CNNEncoder
from .heads import ImageClassifier
from .mae import MaskedAutoencoder
from .pretrained import create_timm_model, load_pretrained, recorded_encoder_architecture, timm_model_name
from .text_decoder import TextDecoder
from .vit import ARCH_KEYS, VisionTransformer, auto_patch_size, create_vit

__all__ = ["create_captioner", "create_cnn_classifier", "create_encoder", "create_image_classifier", "create_mae",
           "encoder_kwargs"]


def encoder_kwargs(preset: str | None, pretrained: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``create_vit`` arguments besides the preset: ``kwargs`` less unset (None) architecture
    keys, which mean "from the preset", or, with ``preset=None`` and a timm model as
    ``pretrained`` (its name, or weights with timm's hub ``config.json`` beside them), "from
    that timm model" (built without weights: no network needed). Explicit kwargs win.
    Without pretrained weights, an unset patch size follows the image size (``auto_patch_size``);
    with them it is the weights' (the preset's, the timm model's, or, for a checkpoint of ours
    such as an MAE pretraining's, the encoder architecture it recorded)."""
    recorded = recorded_encoder_architecture(pretrained) if pretrained else {}
    kwargs = {**kwargs, **{k: v for k, v in recorded.items() if kwargs.get(k) is None}}
    if kwargs.get("patch_size") is None and not pretrained and kwargs.get("img_size") is not None:
        kwargs = {**kwargs, "patch_size": auto_patch_size(kwargs["img_size"])}
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in ARCH_KEYS}
    name = timm_model_name(pretrained) if preset is None and pretrained else None
    if name:
        from .convert_timm import vit_kwargs_from_timm

        return {**vit_kwargs_from_timm(create_timm_model(name, pretrained=False)), **kwargs}
    if preset is None and not kwargs:
        raise ValueError("give a model preset (e.g. 'vit_tiny') or a timm name as `pretrained`")
    return kwargs


def create_encoder(preset: str | None = "vit_tiny", pretrained: str | None = None, **kwargs: Any) -> VisionTransformer:
    """A ``VisionTransformer`` from a preset (or, with ``preset=None`` and a timm name as
    ``pretrained``, the timm model's architecture), optionally with pretrained weights.
    ``kwargs`` go to ``VisionTransformer`` (``stem``, ``locality_attn``, ...)."""
    encoder = create_vit(preset, **encoder_kwargs(preset, pretrained, kwargs))
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
    its class count matches) from a timm name or a local weights file; with ``preset=None`` a
    timm name also gives the architecture (any timm ViT, not only the presets' sizes).
    ``kwargs`` go to ``VisionTransformer``, e.g. ``stem='conv'|'spt'``, ``locality_attn=True``
    for small data sets."""
    if num_classes is None:
        raise ValueError("num_classes is not set (model.num_classes); it is normally taken from the data")
    encoder = create_vit(preset, **encoder_kwargs(preset, pretrained, kwargs))
    model = ImageClassifier(encoder, num_classes, drop_rate=drop_rate)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def create_cnn_classifier(
    name: str = "resnet18",
    num_classes: int | None = 1000,
    img_size: int = 224,
    in_chans: int = 3,
    pretrained: str | None = None,
    small_input_stem: bool | str = "auto",
    drop_rate: float = 0.0,
) -> ImageClassifier:
    """A timm CNN baseline (``CNNEncoder``) + classification head. ``small_input_stem``:
    MedMNIST's 3x3 stride-1 stem without max-pool; "auto" when ``img_size`` <= 64.
    ``pretrained`` (timm name or local file) loads the encoder; the head starts fresh."""
    if num_classes is None:
        raise ValueError("num_classes is not set (model.num_classes); it is normally taken from the data")
    encoder = CNNEncoder(name, in_chans, img_size, small_input_stem, pretrained)
    return ImageClassifier(encoder, num_classes, drop_rate=drop_rate)


def create_mae(
    encoder_preset: str | None = "vit_tiny",
    encoder_pretrained: str | None = None,
    decoder_embed_dim: int = 128,
    decoder_depth: int = 2,
    decoder_num_heads: int = 4,
    mask_ratio: float = 0.75,
    norm_pix_loss: bool = True,
    **encoder_kwargs: Any,
) -> MaskedAutoencoder:
    """ViT encoder (``create_encoder``'s arguments: preset, img_size, in_chans, patch_size,
    depth, ...) + a small pixel decoder, for masked-autoencoder pretraining. Downstream,
    ``model.pretrained=<run>/checkpoints/last.ckpt`` takes its encoder only."""
    encoder = create_encoder(encoder_preset, encoder_pretrained, **encoder_kwargs)
    return MaskedAutoencoder(encoder, decoder_embed_dim, decoder_depth, decoder_num_heads, mask_ratio, norm_pix_loss)


def create_captioner(
    encoder_preset: str | None = "vit_tiny",
    vocab_size: int | None = None,
    decoder_embed_dim: int = 256,
    decoder_depth: int = 4,
    decoder_num_heads: int = 4,
    max_len: int = 64,
    img_size: int = 224,
    patch_size: int | None = None,
    encoder_pretrained: str | None = None,
    decoder_pretrained: str | None = None,
    freeze_encoder: bool = False,
    projector: str = "linear",
    decoder_drop_rate: float = 0.0,
    decoder_arch: dict[str, Any] | None = None,
    **encoder_kwargs: Any,
) -> ImageCaptioner:
    """ViT encoder + projector + text decoder with cross-attention.

    ``decoder_pretrained`` (a local Hugging Face GPT-2 folder / weights file, or a hub name
    when online) takes the decoder's architecture and weights from GPT-2, so
    ``decoder_embed_dim/depth/num_heads`` are ignored and ``vocab_size`` must be GPT-2's.
    ``decoder_arch`` (``TextDecoder`` arguments) builds that decoder again without the GPT-2
    files: the captioning task records it in checkpoints of GPT-2 captioners.
    """
    encoder = create_encoder(
        encoder_preset, encoder_pretrained, img_size=img_size, patch_size=patch_size, **encoder_kwargs
    )
    context_dim = encoder.embed_dim if projector == "none" else None  # None: the decoder's width
    if decoder_pretrained:
        from .convert_gpt2 import create_gpt2_decoder

        decoder = create_gpt2_decoder(
            decoder_pretrained, cross_attention=True, context_dim=context_dim, max_len=max_len,
            drop_rate=decoder_drop_rate,
        )
        if vocab_size is not None and vocab_size != decoder.vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} but GPT-2 {decoder_pretrained!r} has {decoder.vocab_size} tokens: "
                "use GPT-2's tokenizer with a pretrained GPT-2 decoder"
            )
    elif decoder_arch:
        decoder = TextDecoder(**decoder_arch)
    else:
        if vocab_size is None:
            raise ValueError("vocab_size is not set (model.vocab_size); it is normally taken from the tokenizer")
        decoder = TextDecoder(
            vocab_size, max_len, decoder_embed_dim, decoder_depth, decoder_num_heads, cross_attention=True,
            context_dim=context_dim, drop_rate=decoder_drop_rate,
        )
    return ImageCaptioner(encoder, decoder, projector=projector, freeze_encoder=freeze_encoder)
