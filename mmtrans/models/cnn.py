"""CNN baseline encoders (timm ResNets) behind the interface our heads and tasks read.

``CNNEncoder`` wraps ``timm.create_model(name, num_classes=0, global_pool='')`` and returns
the final feature map flattened to tokens ``[B, h * w, C]``, so ``ClassifierHead`` with
``pool='avg'`` and no prefix tokens computes exactly timm's global average pool + ``fc``.

Small inputs (MedMNIST's 28 px) get the stem of MedMNIST v2's ResNet baselines (after
kuangliu/pytorch-cifar): a 3x3 stride-1 ``conv1`` and no max-pool, so a 28 px image leaves a
4x4 map instead of 1x1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .pretrained import (
    _normalization_next_to,
    check_state_dict,
    create_timm_model,
    is_weights_path,
    read_state_dict,
)

__all__ = ["CNNEncoder", "resolve_small_input_stem"]

# The normalisation of a randomly initialised encoder: [0, 1] images to [-1, 1], as the ViT.
RANDOM_INIT_MEAN = (0.5, 0.5, 0.5)
RANDOM_INIT_STD = (0.5, 0.5, 0.5)
SMALL_INPUT_MAX_SIZE = 64  # small_input_stem="auto": the small stem up to this image size


def resolve_small_input_stem(small_input_stem: bool | str, img_size: int | tuple[int, int]) -> bool:
    """``True`` / ``False`` as given; ``"auto"``: on when the image is at most 64 px."""
    if isinstance(small_input_stem, bool):
        return small_input_stem
    if small_input_stem != "auto":
        raise ValueError(f"small_input_stem must be true, false or 'auto', got {small_input_stem!r}")
    size = max(img_size) if isinstance(img_size, (tuple, list)) else img_size
    return size <= SMALL_INPUT_MAX_SIZE


class CNNEncoder(nn.Module):
    """A timm CNN (ResNet family) as a token encoder: ``forward_features(x) -> [B, N, C]``."""

    # What ImageClassifier / ClassifierHead read: mean of all tokens, no prefix, no fc norm.
    global_pool = "avg"
    num_prefix_tokens = 0
    use_fc_norm = False

    def __init__(
        self,
        name: str = "resnet18",
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        small_input_stem: bool | str = "auto",
        pretrained: str | None = None,
    ) -> None:
        """``pretrained``: a timm model name (downloads, e.g. ``resnet18.a1_in1k``) or a local
        weights file of that architecture (timm's keys, or one of our checkpoints). With the
        small stem the pretrained 7x7 ``conv1`` does not fit and stays freshly initialised."""
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"model.name={name!r} is not a timm model (e.g. 'resnet18', 'resnet50')")
        self.name, self.in_chans = name, in_chans
        self.small_input_stem = resolve_small_input_stem(small_input_stem, img_size)
        self.trunk = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
        if not hasattr(self.trunk, "layer4") or not hasattr(self.trunk, "conv1"):
            raise ValueError(f"model.name={name!r}: CNNEncoder supports timm ResNets (conv1, layer1..layer4)")
        if self.small_input_stem:
            self._use_small_stem()
        self.embed_dim = self.num_features = self.trunk.num_features
        self.num_layers = 4  # stages; layer_id: stem 0, layer i -> i
        self.pretrained_cfg: dict[str, Any] = dict(mean=RANDOM_INIT_MEAN, std=RANDOM_INIT_STD)
        if pretrained:
            self.load_pretrained(pretrained)

    def _use_small_stem(self) -> None:
        """MedMNIST v2's ResNet stem: conv 3x3 stride 1 padding 1 (no bias), BN, ReLU, no max-pool."""
        old = self.trunk.conv1
        if not isinstance(old, nn.Conv2d):  # deep-stem variants (resnet18d, ...) have a Sequential
            raise ValueError(f"small_input_stem needs a single-conv stem; {self.name!r} has {type(old).__name__}")
        self.trunk.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.trunk.conv1.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet init
        self.trunk.maxpool = nn.Identity()

    # -- weights ----------------------------------------------------------------------------
    def load_pretrained(self, source: str) -> None:
        """Trunk weights from a timm name or a file; records the source's normalisation."""
        if is_weights_path(source):
            state_dict = read_state_dict(source)
            # One of our classifier checkpoints: keep the encoder's trunk.
            if any(k.startswith("encoder.trunk.") for k in state_dict):
                state_dict = {k[len("encoder.trunk."):]: v for k, v in state_dict.items()
                              if k.startswith("encoder.trunk.")}
            # timm's ImageNet statistics for this architecture, unless a config.json says otherwise.
            extra = {k: tuple(self.trunk.pretrained_cfg[k]) for k in ("mean", "std")}
            extra.update(_normalization_next_to(Path(source)))
        else:
            timm_model = create_timm_model(source, pretrained=True, num_classes=0, global_pool="",
                                           in_chans=self.in_chans)
            state_dict = timm_model.state_dict()
            extra = {k: tuple(timm_model.pretrained_cfg[k]) for k in ("mean", "std")}
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        state_dict = self._fit_stem(state_dict)
        allow = ("conv1.",) if self.small_input_stem else ()
        check_state_dict(self.trunk, state_dict, str(source), allow_missing=allow)
        self.trunk.load_state_dict(state_dict, strict=False)
        self.pretrained_cfg = {**self.pretrained_cfg, **extra, "source": str(source)}

    def _fit_stem(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Adapt ``conv1.weight`` to our stem: timm's channel adaptation (RGB -> grey sums the
        filters), or drop it for the small stem (a 7x7 kernel has no 3x3 equivalent)."""
        weight = state_dict.get("conv1.weight")
        if weight is None:
            return state_dict
        own = self.trunk.conv1.weight
        if weight.shape[-2:] != own.shape[-2:] and self.small_input_stem:
            return {k: v for k, v in state_dict.items() if k != "conv1.weight"}
        if weight.shape[1] != own.shape[1]:
            from timm.models import adapt_input_conv

            state_dict = {**state_dict, "conv1.weight": adapt_input_conv(own.shape[1], weight)}
        return state_dict

    # -- helpers used by optimisers ---------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        return set()  # biases and BN parameters are 1-d: param_groups already skips them

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: stem 0, ``layer{i}`` -> i."""
        part = name.split(".")[1] if name.startswith("trunk.") else name
        if part.startswith("layer") and part[5:].isdigit():
            return int(part[5:])
        return 0 if part in ("conv1", "bn1") else self.num_layers + 1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)  # timm recomputes each stage in backward

    @property
    def grad_checkpointing(self) -> bool:
        return bool(self.trunk.grad_checkpointing)

    # -- forward ----------------------------------------------------------------------------
    def forward_feature_map(self, x: Tensor) -> Tensor:
        """The final feature map ``[B, C, h, w]`` (what class activation maps weight)."""
        return self.trunk.forward_features(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens ``[B, h * w, C]``: the final feature map, flattened row by row."""
        return self.forward_feature_map(x).flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)
