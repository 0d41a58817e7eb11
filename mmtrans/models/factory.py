"""Build models by name: the entry points that configs point ``_target_`` at."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from torch import nn

from mmtrans.nn import CONV_STEMS, get_act_layer, resample_pos_embed

from .captioner import ImageCaptioner
from .clip import CoCa, ContrastiveModel
from .cnn import CNNEncoder
from .heads import ImageClassifier
from .mae import MaskedAutoencoder
from .pretrained import create_timm_model, load_pretrained, recorded_encoder_architecture, timm_model_name
from .text_decoder import TextDecoder
from .vit import ARCH_KEYS, VisionTransformer, auto_patch_size, create_vit

__all__ = ["create_captioner", "create_clip", "create_cnn_classifier", "create_encoder", "create_image_classifier", "create_mae",
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
    if recorded.get("stem") is not None and kwargs.get("stem") not in (None, recorded["stem"]):
        # Stems can share parameter names and shapes (conv / conv_pool at patch 2): refuse by name.
        raise ValueError(f"{pretrained} was trained with stem={recorded['stem']!r}; model.stem="
                         f"{kwargs['stem']!r} would load its weights into a different stem (leave it unset)")
    if recorded.get("stem") in CONV_STEMS:  # a conv stem recorded without its depth had 1 conv per stage
        recorded = {"stem_depth": 1, **recorded}
        if kwargs.get("stem_depth") not in (None, recorded["stem_depth"]):
            raise ValueError(f"{pretrained} was trained with stem_depth={recorded['stem_depth']}; model.stem_depth="
                             f"{kwargs['stem_depth']} would not fit its stem's weights (leave it unset)")
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
    contrastive: bool = False,
    unimodal_depth: int = 1,
    joint_dim: int = 128,
    image_pool: str = "attn",
    **encoder_kwargs: Any,
) -> ImageCaptioner:
    """ViT encoder + projector + text decoder with cross-attention.

    ``contrastive``: CoCa (``mmtrans.models.clip.CoCa``): the decoder's first
    ``unimodal_depth`` blocks are text-only and a contrastive head (``image_pool`` pooling,
    ``joint_dim`` joint space) is added; otherwise those three arguments are not used.

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
        if contrastive and not 1 <= unimodal_depth < decoder_depth:
            raise ValueError(f"a contrastive captioner (CoCa) splits its decoder: model.unimodal_depth={unimodal_depth} "
                             f"text-only blocks, then cross-attending ones; it must be in [1, model.decoder_depth="
                             f"{decoder_depth}): raise model.decoder_depth or lower model.unimodal_depth")
        decoder = TextDecoder(
            vocab_size, max_len, decoder_embed_dim, decoder_depth, decoder_num_heads, cross_attention=True,
            context_dim=context_dim, drop_rate=decoder_drop_rate, unimodal_depth=unimodal_depth if contrastive else 0,
        )
    if contrastive:
        if decoder.unimodal_depth < 1:
            raise ValueError("a contrastive captioner (CoCa) needs model.unimodal_depth >= 1 text-only decoder blocks "
                             "(with model.decoder_pretrained, a GPT-2 decoder cross-attends in every block)")
        return CoCa(encoder, decoder, joint_dim, projector, image_pool, freeze_encoder=freeze_encoder)
    return ImageCaptioner(encoder, decoder, projector=projector, freeze_encoder=freeze_encoder)


def create_clip(
    encoder_preset: str | None = "vit_tiny",
    vocab_size: int | None = None,
    joint_dim: int = 128,
    image_pool: str = "attn",
    text_pool: str = "eos",
    text_embed_dim: int = 192,
    text_depth: int = 3,
    text_num_heads: int = 3,
    max_len: int = 32,
    img_size: int = 224,
    patch_size: int | None = None,
    act_layer: str = "gelu",
    norm_eps: float = 1e-5,
    init_logit_scale: float = math.log(1 / 0.07),
    max_logit_scale: float = 100.0,
    pretrained: str | None = None,
    pretrained_tag: str | None = None,
    **encoder_kwargs: Any,
) -> ContrastiveModel:
    """CLIP: a ViT image tower (``create_vit``: preset + ``encoder_kwargs`` such as ``embed_dim``,
    ``depth``, ``pre_norm``) and a text-only ``TextDecoder`` (``text_*``), pooled and projected
    to ``joint_dim`` (``ContrastiveModel``). ``act_layer`` ('gelu', 'quick_gelu', 'gelu_tanh')
    and ``norm_eps`` apply to both towers.

    ``pretrained``: open_clip CLIP weights, a local state dict file (architecture read from it;
    OpenAI's weights need ``act_layer='quick_gelu'``) or an open_clip model name with
    ``pretrained_tag`` (online, open_clip installed; QuickGELU set from the tag). The built
    model's ``arch`` holds the arguments that rebuild it without the weights (checkpoints
    record them)."""
    from .convert_open_clip import (
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        clip_kwargs_from_open_clip,
        convert_open_clip,
        load_open_clip_state_dict,
    )
    from .pretrained import load_state_dict_checked

    state_dict = None
    if pretrained:
        state_dict, quick_gelu = load_open_clip_state_dict(pretrained, pretrained_tag)
        arch = clip_kwargs_from_open_clip(state_dict, encoder_kwargs.get("num_heads"), None,
                                          "quick_gelu" if quick_gelu else act_layer)
        if vocab_size is not None and vocab_size != arch["vocab_size"]:
            raise ValueError(f"vocab_size={vocab_size} but the CLIP weights {pretrained!r} have {arch['vocab_size']} "
                             "tokens: use their tokenizer (task.tokenizer.pretrained)")
        encoder_preset, vocab_size, joint_dim, image_pool, text_pool = (
            None, arch["vocab_size"], arch["joint_dim"], "cls", "eos")
        text_embed_dim, text_depth, text_num_heads = arch["text_embed_dim"], arch["text_depth"], arch["text_num_heads"]
        # The image size stays the caller's (the data's): the position table is resampled.
        max_len, patch_size, act_layer, norm_eps = arch["max_len"], arch["patch_size"], arch["act_layer"], arch["norm_eps"]
        encoder_kwargs = {**encoder_kwargs, "stem": "patch",  # CLIP's: one patch projection
                          **{k: arch[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "pre_norm")}}
    if vocab_size is None:
        raise ValueError("vocab_size is not set (model.vocab_size); it is normally taken from the tokenizer")
    if image_pool == "avg":  # open_clip's order: final norm on every token, then the mean
        encoder_kwargs = {"global_pool": "avg", "fc_norm": False, **encoder_kwargs}
    act = get_act_layer(act_layer)
    encoder = create_encoder(encoder_preset, None, img_size=img_size, patch_size=patch_size, act_layer=act,
                             norm_layer=partial(nn.LayerNorm, eps=norm_eps), **encoder_kwargs)
    text = TextDecoder(vocab_size, max_len, text_embed_dim, text_depth, text_num_heads, cross_attention=False,
                       norm_eps=norm_eps, act_layer=act_layer)
    model = ContrastiveModel(encoder, text, joint_dim, image_pool, text_pool, init_logit_scale=init_logit_scale,
                             max_logit_scale=max_logit_scale)
    if state_dict is not None:
        converted = convert_open_clip(state_dict)
        grid = encoder.patch_embed.grid_size
        if converted["encoder.pos_embed"].shape != encoder.pos_embed.shape:
            side = arch["img_size"] // arch["patch_size"]
            converted["encoder.pos_embed"] = resample_pos_embed(converted["encoder.pos_embed"], grid, (side, side))
        load_state_dict_checked(model, converted, str(pretrained))
        encoder.pretrained_cfg = {**encoder.pretrained_cfg, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD,
                                  "source": str(pretrained)}
    model.arch = dict(
        encoder_preset=encoder_preset, vocab_size=vocab_size, joint_dim=joint_dim, image_pool=image_pool,
        text_pool=text_pool, text_embed_dim=text_embed_dim, text_depth=text_depth, text_num_heads=text_num_heads,
        max_len=max_len, img_size=img_size, patch_size=int(encoder.patch_embed.patch_size[0]), act_layer=act_layer,
        norm_eps=norm_eps, **{k: v for k, v in encoder_kwargs.items() if k not in ("global_pool", "fc_norm")},
    )
    return model
