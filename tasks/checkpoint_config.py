"""The config a task keeps in its checkpoints: resolved, plus what the data and the weights'
source implied (image size, channels, patch size, a timm encoder's architecture), so that the
checkpoint alone rebuilds the model (``tasks.checkpoint.load_model``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from mmtrans.data.preprocessing import Preprocessing
from mmtrans.models.factory import encoder_kwargs
from mmtrans.models.pretrained import timm_model_name

__all__ = ["checkpoint_config"]


def checkpoint_config(cfg: Any, preprocessing: Preprocessing, model: nn.Module | None = None) -> dict[str, Any]:
    """The run's config as tasks keep it in checkpoints, so that the checkpoint alone rebuilds
    the model (`load_model` drops every `*pretrained` source: no weights are fetched again).

    Resolved, plus what the data and the sources implied: the image size and channels the
    model was built for (`preprocessing`), the patch size it got when the config left it to
    the image size or the weights (from `model`), and, for an encoder whose preset is null, the
    architecture of the timm model it came from, as constructor arguments in `model`
    (`encoder_kwargs`)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    model_cfg = config["model"]
    model_cfg.update(img_size=preprocessing.img_size, in_chans=preprocessing.in_chans)
    patch_embed = getattr(getattr(model, "encoder", model), "patch_embed", None)
    if "patch_size" in model_cfg and model_cfg["patch_size"] is None and patch_embed is not None:
        model_cfg["patch_size"] = int(patch_embed.patch_size[0])
    for preset_key, source_key in (("preset", "pretrained"), ("encoder_preset", "encoder_pretrained")):
        source = model_cfg.get(source_key)
        if preset_key in model_cfg and model_cfg[preset_key] is None and source and timm_model_name(source):
            arch = encoder_kwargs(None, source, {})
            model_cfg.update({k: v for k, v in arch.items() if model_cfg.get(k) is None})
    return config
