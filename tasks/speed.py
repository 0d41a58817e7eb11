"""Training speed switches applied to a built model: torch.compile, channels_last, and
gradient checkpointing of the transformer blocks (config keys `compile`, `channels_last`,
`grad_checkpointing`). Mixed precision is Lightning's (`trainer.precision=bf16-mixed`) and
fused AdamW is chosen in `mmtrans.optim` when the parameters are on a GPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["apply_speed_options"]


def apply_speed_options(
    model: nn.Module,
    compile: bool | Mapping[str, Any] = False,
    channels_last: bool = False,
    grad_checkpointing: bool = False,
) -> None:
    """Change ``model`` in place.

    ``grad_checkpointing``: every submodule with ``set_grad_checkpointing`` (the ViT encoder,
    the text decoder) recomputes its blocks' activations in backward: less memory for
    ~30% more compute. ``channels_last``: NHWC weights for the patch-embedding convolution
    (helps conv kernels on GPUs; the transformer blocks are unaffected). ``compile``: True or
    keyword arguments of ``torch.compile`` (``{mode: max-autotune}``, ``{backend: ...}``);
    ``nn.Module.compile`` works in place, so state-dict keys and checkpoints stay as they are.
    """
    if grad_checkpointing:
        targets = [m for m in model.modules() if hasattr(m, "set_grad_checkpointing")]
        if not targets:
            raise ValueError(f"grad_checkpointing=true, but {type(model).__name__} has no checkpointable blocks")
        for module in targets:
            module.set_grad_checkpointing(True)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(**(dict(compile) if isinstance(compile, Mapping) else {}))
