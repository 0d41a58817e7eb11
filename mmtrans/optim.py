"""AdamW parameter groups (decay / no-decay, layer-wise lr decay), warmup + cosine, and
sharpness-aware minimisation around any optimiser.

Models opt in to layer-wise decay by exposing ``layer_id(name)`` and ``num_layers``
(the ViT and ``ImageClassifier`` do), and to no-decay names by ``no_weight_decay()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SAM", "adamw", "build_adamw", "param_groups", "warmup_cosine"]


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None
) -> list[dict]:
    """Trainable parameters grouped by (decay?, lr scale).

    Biases, norms, position tables and prefix tokens get no weight decay (nanoGPT / timm
    rule: decay only matrices). With ``layer_decay`` a parameter at depth ``i`` of ``n`` gets
    ``lr * layer_decay ** (n - i)``: the head trains fastest, the patch embedding slowest.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay is not None and not hasattr(model, "layer_id"):
        raise ValueError(f"layer_decay needs a model with layer_id(); {type(model).__name__} has none")
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in skip
        layer = model.layer_id(name) if layer_decay is not None else 0
        scale = layer_decay ** (model.num_layers - layer) if layer_decay is not None else 1.0
        g = groups.setdefault((decay, layer), {
            "params": [], "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale, "lr_scale": scale,
        })
        g["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float | None = None,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; the fused CUDA kernel when every parameter is on a GPU."""
    return adamw(param_groups(model, lr, weight_decay, layer_decay), lr, betas, fused)


def adamw(
    groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999), fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over prepared groups (e.g. several ``param_groups`` with their own lr)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation (Foret et al. 2021) around a ``base`` optimiser.

    Each ``step(closure)`` takes the gradient ``g`` at the weights ``w`` (first closure call),
    moves to ``w + rho * g / ||g||`` (the steepest nearby point), takes the gradient there
    (second call), returns to ``w`` and lets ``base`` step with that gradient: it prefers flat
    minima, which helps ViTs trained without pretraining (Chen et al. 2022, "When vision
    transformers outperform ResNets without pretraining or strong data augmentations").
    Twice the forward and backward passes of a step. Lightning's automatic optimisation
    passes the closure (and clips each gradient inside it); GradScaler (fp16) calls
    ``step()`` without one and is refused. ``param_groups`` are the base's own dicts, so lr
    schedules reach it; ``state_dict`` is the base's (the perturbation lives within a step).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        if not rho > 0:
            raise ValueError(f"SAM rho must be > 0 (the radius of the weight perturbation), got {rho}")
        self.base, self.rho = base, float(rho)
        super().__init__(base.param_groups, base.defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes loss and gradients (Lightning's automatic "
                             "optimisation passes one; fp16 GradScaler does not: use bf16 or 32-bit precision)")
        closure = torch.enable_grad()(closure)
        loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        eps = torch._foreach_mul(grads, self.rho / (norm + 1e-12))
        torch._foreach_add_(params, eps)
        self.zero_grad()
        closure()
        torch._foreach_sub_(params, eps)
        self.base.step()
        return loss

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups  # load_state_dict made new group dicts
