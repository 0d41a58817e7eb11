"""OmegaConf resolvers the configs use; registered when `tasks` is imported (train.py does)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from omegaconf import OmegaConf

__all__ = ["ckpt_preprocessing", "timm_weights"]


def timm_weights(preset: str | None, tag: str) -> str:
    """``${timm_weights:${.preset},patch16_224.augreg_in21k_ft_in1k}``: the timm weights named
    after a ViT preset (``vit_small`` -> ``vit_small_patch16_224.augreg_in21k_ft_in1k``)."""
    if not preset:
        raise ValueError(
            "model.pretrained is named after model.preset, which is null: give the weights yourself, "
            "model.pretrained=<timm model name or a local weights file> (the architecture then comes from them)"
        )
    return f"{preset}_{tag}"


@lru_cache(maxsize=4)
def _recorded_preprocessing(path: str) -> dict[str, Any]:
    from tasks.checkpoint import read_checkpoint

    return dict((read_checkpoint(path).get("hyper_parameters") or {}).get("preprocessing") or {})


def ckpt_preprocessing(path: str | None, key: str) -> Any:
    """``${ckpt_preprocessing:${ckpt_path},img_size}``: what a task checkpoint recorded about its
    input (``img_size``, ``in_chans``, ``mean``, ``std``, ``crop_pct``, ``interpolation``), so that
    another data set is fed to that model the way it was trained (task=zeroshot). None without
    a checkpoint."""
    if not path:  # null: the data decides; the task then asks for its checkpoint (task=zeroshot)
        return None
    recorded = _recorded_preprocessing(str(path))
    if key not in recorded:
        raise ValueError(f"checkpoint {path} records no preprocessing {key!r} (written by an older mmtrans?)")
    return recorded[key]


if not OmegaConf.has_resolver("ckpt_preprocessing"):
    OmegaConf.register_new_resolver("ckpt_preprocessing", ckpt_preprocessing)
if not OmegaConf.has_resolver("timm_weights"):
    OmegaConf.register_new_resolver("timm_weights", timm_weights)
