"""Classification head and the encoder + head classifier."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["ClassifierHead", "ImageClassifier", "head_outputs", "pool_tokens"]


def head_outputs(label_type: str, num_classes: int) -> int:
    """Logits a head needs for a label type: one for binary (a sigmoid score, as a threshold
    and an AUC want), one per class or label otherwise."""
    return 1 if label_type == "binary" else num_classes


def pool_tokens(x: Tensor, pool: str, num_prefix_tokens: int) -> Tensor:
    """``[B, T, D] -> [B, D]``: the class token ('cls') or the mean of patch tokens ('avg')."""
    if pool == "cls":
        return x[:, 0]
    if pool == "avg":
        return x[:, num_prefix_tokens:].mean(dim=1)
    if pool == "none":
        return x
    raise ValueError(f"pool must be 'cls', 'avg' or 'none', got {pool!r}")


class ClassifierHead(nn.Module):
    """pool -> norm -> dropout -> linear. Outputs logits; the loss decides between softmax
    (multi-class) and per-label sigmoid (multi-label), so one head serves both."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool: str = "cls",
        num_prefix_tokens: int = 1,
        use_norm: bool = False,
        drop_rate: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.pool, self.num_prefix_tokens, self.num_classes = pool, num_prefix_tokens, num_classes
        self.norm = (norm_layer or (lambda d: nn.LayerNorm(d, eps=1e-6)))(in_features) if use_norm else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.norm(pool_tokens(x, self.pool, self.num_prefix_tokens)))
        return x if pre_logits else self.fc(x)


class ImageClassifier(nn.Module):
    """An image encoder (anything with ``forward_features`` -> tokens) and a ``ClassifierHead``."""

    def __init__(self, encoder: nn.Module, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierHead(
            encoder.num_features,
            num_classes,
            pool=encoder.global_pool,
            num_prefix_tokens=encoder.num_prefix_tokens,
            use_norm=encoder.use_fc_norm,
            drop_rate=drop_rate,
        )

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.encoder.pretrained_cfg

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def layer_id(self, name: str) -> int:
        if name.startswith("encoder."):
            return self.encoder.layer_id(name[len("encoder."):])
        return self.num_layers  # the head sits above every block

    @property
    def num_layers(self) -> int:
        # A ViT's depth is its blocks; other encoders (CNNs: stages) say theirs.
        depth = getattr(self.encoder, "num_layers", None)
        return (len(self.encoder.blocks) if depth is None else depth) + 1

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encoder.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder.forward_features(x))
