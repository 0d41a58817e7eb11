"""timm ``VisionTransformer`` -> mmtrans ``VisionTransformer`` / ``ImageClassifier``.

Encoder keys are shared with timm, so conversion is a filter: prefix for the classifier,
``fc_norm``/``head`` moved into our ``ClassifierHead``, the position table resampled to a new
grid and the patch filter adapted to a new channel count (timm's ``adapt_input_conv``; grey
to colour: the filter spread over the channels).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mmtrans.nn import resample_pos_embed

from .heads import ImageClassifier
from .vit import VisionTransformer

__all__ = ["convert_timm_vit", "is_timm_vit_state_dict", "vit_kwargs_from_timm"]


def is_timm_vit_state_dict(state_dict: dict[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in state_dict and "blocks.0.attn.qkv.weight" in state_dict


def vit_kwargs_from_timm(timm_model: nn.Module) -> dict[str, Any]:
    """Architecture of a timm ViT as ``VisionTransformer`` constructor arguments."""
    blk = timm_model.blocks[0]
    pe = timm_model.patch_embed
    unsupported = [
        name for name, cond in (
            ("attention pooling", getattr(timm_model, "attn_pool", None) is not None),
            ("attention scale-norm", not isinstance(getattr(blk.attn, "norm", nn.Identity()), nn.Identity)),
            ("MLP norm", not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity)),
            ("non-Mlp feed-forward", not hasattr(blk.mlp, "fc1")),
        ) if cond
    ]
    if unsupported:
        raise ValueError(f"timm model {type(timm_model).__name__} uses {', '.join(unsupported)}, not supported")
    return dict(
        img_size=tuple(pe.img_size),
        patch_size=pe.patch_size[0],
        in_chans=pe.proj.in_channels,
        embed_dim=timm_model.embed_dim,
        depth=len(timm_model.blocks),
        num_heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / timm_model.embed_dim,
        qkv_bias=blk.attn.qkv.bias is not None,
        qk_norm=not isinstance(blk.attn.q_norm, nn.Identity),
        init_values=float(blk.ls1.gamma.detach().flatten()[0]) if hasattr(blk.ls1, "gamma") else None,
        class_token=timm_model.cls_token is not None,
        reg_tokens=getattr(timm_model, "num_reg_tokens", 0),
        no_embed_class=timm_model.no_embed_class,
        pos_embed="learn" if timm_model.pos_embed is not None else "none",
        pre_norm=not isinstance(timm_model.norm_pre, nn.Identity),
        final_norm=not (isinstance(timm_model.norm, nn.Identity) and isinstance(timm_model.fc_norm, nn.Identity)),
        global_pool={"token": "cls", "": "none"}.get(timm_model.global_pool, timm_model.global_pool),
        fc_norm=not isinstance(timm_model.fc_norm, nn.Identity),
    )


def convert_timm_vit(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map a timm ViT state dict onto ``model`` (a ``VisionTransformer`` or ``ImageClassifier``).

    A classifier head whose class count differs from the checkpoint's is left out (so the
    caller's fresh head is kept: the usual fine-tuning case); everything else must fit.
    """
    encoder: VisionTransformer = model.encoder if isinstance(model, ImageClassifier) else model
    prefix = "encoder." if isinstance(model, ImageClassifier) else ""
    state_dict = state_dict.get("model", state_dict)
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith(("head.", "fc_norm.")):
            continue
        if k == "pos_embed" and encoder.pos_embed is not None:
            n_prefix = 0 if encoder.no_embed_class else encoder.num_prefix_tokens
            v = resample_pos_embed(v, encoder.patch_embed.grid_size, num_prefix_tokens=n_prefix)
        elif k == "patch_embed.proj.weight" and encoder.stem_type != "patch":
            if v.shape != encoder.patch_embed.proj.weight.shape:  # our own conv/SPT weights pass through
                raise ValueError(
                    f"these weights have timm's patch stem, the model has stem={encoder.stem_type!r}: "
                    "build it with stem='patch' to load them"
                )
        elif k == "patch_embed.proj.weight" and v.shape[1] == 1:
            # Grey weights (e.g. MAE on scans) on colour input: each channel gets the grey
            # filter / C, so an image with equal channels gives the grey model's response.
            v = v.repeat(1, encoder.in_chans, 1, 1) / encoder.in_chans
        elif k == "patch_embed.proj.weight" and v.shape[1] != encoder.in_chans:
            from timm.models import adapt_input_conv  # timm's rule: grey sums RGB filters

            v = adapt_input_conv(encoder.in_chans, v)
        out[prefix + k] = v
    if isinstance(model, ImageClassifier):
        if "fc_norm.weight" in state_dict:
            out["head.norm.weight"] = state_dict["fc_norm.weight"]
            out["head.norm.bias"] = state_dict["fc_norm.bias"]
        head_w = state_dict.get("head.weight")
        if head_w is not None and head_w.shape == model.head.fc.weight.shape:
            out["head.fc.weight"] = head_w
            out["head.fc.bias"] = state_dict["head.bias"]
    return out
