"""OmegaConf resolvers the configs use; registered when `tasks` is imported (train.py does)."""

from __future__ import annotations

from omegaconf import OmegaConf

__all__ = ["timm_weights"]


def timm_weights(preset: str | None, tag: str) -> str:
    """``${timm_weights:${.preset},patch16_224.augreg_in21k_ft_in1k}``: the timm weights named
    after a ViT preset (``vit_small`` -> ``vit_small_patch16_224.augreg_in21k_ft_in1k``)."""
    if not preset:
        raise ValueError(
            "model.pretrained is named after model.preset, which is null: give the weights yourself, "
            "model.pretrained=<timm model name or a local weights file> (the architecture then comes from them)"
        )
    return f"{preset}_{tag}"


if not OmegaConf.has_resolver("timm_weights"):
    OmegaConf.register_new_resolver("timm_weights", timm_weights)
