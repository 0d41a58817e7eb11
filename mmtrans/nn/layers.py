"""Small layers shared by every block: MLP, stochastic depth, LayerScale, activations.

Names and semantics follow timm so that its checkpoints load without renaming.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

__all__ = ["ACT_LAYERS", "DropPath", "LayerScale", "Mlp", "QuickGELU", "drop_path", "get_act_layer"]


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth per sample: drop the whole residual branch, rescale survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT); ``gamma`` as in timm."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> act -> drop -> fc2 -> drop (the transformer feed-forward)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


# Activations by the name a config gives: exact GELU (timm, open_clip), GPT-2's tanh
# approximation ("gelu_new"), OpenAI CLIP's QuickGELU.
ACT_LAYERS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),  # type: ignore[dict-item]
    "quick_gelu": QuickGELU,
}


def get_act_layer(name: str) -> type[nn.Module]:
    if name not in ACT_LAYERS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACT_LAYERS)}")
    return ACT_LAYERS[name]
