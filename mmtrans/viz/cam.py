"""Class activation maps (Zhou et al. 2016) for CNN classifiers, which have no attention.

With global average pooling and a linear head, the logit of class c is the mean over
positions of ``w_c . f(p)`` plus the bias, so ``w_c . f(p)`` says how much each position
adds to that logit: the CAM. Maps follow ``attention_maps``' conventions (``[B, H, W]`` at the
input's size, non-negative, each summing to 1), so they go through the same heat-map grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["class_activation_maps", "class_evidence_map"]

_EPS = 1e-12


def class_evidence_map(model: nn.Module, images: Tensor, class_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-position contributions ``w_c . f(p)`` on the feature grid ``[B, h, w]`` (signed,
    not upsampled; their mean plus the head's bias is the logit) and the classes ``[B]``.

    ``class_idx`` ``[B]``: the class explained per image; None: the highest logit (for a
    one-logit binary head, the positive class). No gradients; call in eval mode.
    """
    encoder = model.encoder
    if not hasattr(encoder, "forward_feature_map"):
        raise ValueError(f"class activation maps need a CNN encoder (forward_feature_map); got {type(encoder).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    param = next(model.parameters())
    with torch.no_grad():
        fmap = encoder.forward_feature_map(images.to(param.device, param.dtype))  # [B, C, h, w]
        if class_idx is None:
            class_idx = model.head(fmap.flatten(2).transpose(1, 2)).argmax(-1)
        weight = model.head.fc.weight[class_idx.to(param.device)]  # [B, C]
        return torch.einsum("bchw,bc->bhw", fmap.float(), weight.float()), class_idx


def class_activation_maps(model: nn.Module, images: Tensor, class_idx: Tensor | None = None) -> Tensor:
    """CAMs ``[B, H, W]`` of an ``ImageClassifier`` whose encoder has ``forward_feature_map``:
    ``class_evidence_map`` shifted to a minimum of 0, upsampled to the input's size and
    normalised to sum 1. Runs in eval mode and restores every submodule's train/eval flag."""
    H, W = images.shape[-2:]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        cams, _ = class_evidence_map(model, images, class_idx)
    finally:
        for m, mode in modes:
            m.training = mode
    # Shifted so the weakest position is 0, as in Zhou et al.'s code: a class with only
    # negative evidence (common for a non-predicted class) still shows where it is least so.
    cams = cams - cams.amin(dim=(-2, -1), keepdim=True)
    cams = F.interpolate(cams.unsqueeze(1), size=(H, W), mode="bilinear", align_corners=False).squeeze(1)
    cams = cams.clamp(min=0) + _EPS  # a constant map becomes uniform rather than 0 / 0
    cams = cams / cams.sum(dim=(-2, -1), keepdim=True)
    return cams.to(images.device)
