"""Image -> patch tokens ``[B, C, H, W] -> [B, N, D]``: the stems a ViT can start with.

- ``PatchEmbed``: one strided convolution (ViT; timm's parameter names).
- ``ConvStem``: 3x3 stride-2 convs + norm + activation, then a 1x1 conv (Xiao et al. 2021,
  "Early convolutions help transformers see better"): more stable optimisation and a
  local inductive bias, which helps most on small data.
  ``downsample='maxpool'`` (``stem='conv_pool'``): stride-1 convs and max-pools instead.
- ``ShiftedPatchEmbed``: shifted patch tokenization (SPT, Lee et al. 2021, "Vision
  Transformer for Small-Size Datasets"): each patch also sees its diagonal neighbours.

All three produce the same ``img_size // patch_size`` token grid and share one interface
(``img_size``, ``patch_size``, ``grid_size``, ``num_patches``, ``dynamic_grid``, ``proj``:
the layer that outputs ``embed_dim``), so the ViT treats them alike (``STEMS``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONV_STEMS", "STEMS", "ConvStem", "PatchEmbed", "ShiftedPatchEmbed"]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


class _TokenGrid(nn.Module):
    """Sizes and input checks shared by the stems."""

    def __init__(self, img_size: int | tuple[int, int], patch_size: int | tuple[int, int], strict_img_size: bool):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        for side, p in zip(self.img_size, self.patch_size):
            if side % p:
                fits = [q for q in (16, 14, 8, 7, 4, 2) if all(s % q == 0 for s in self.img_size)]
                raise ValueError(
                    f"patch_size {p} does not divide the image size {self.img_size[0]}x{self.img_size[1]} "
                    f"(model.patch_size / data.img_size): use a divisor ({', '.join(map(str, fits)) or 1}), "
                    "or leave model.patch_size=null to follow the image size"
                )
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size

    def dynamic_grid(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def _check(self, x: Tensor) -> None:
        H, W = x.shape[-2:]
        if self.strict_img_size and (H, W) != self.img_size:
            raise ValueError(
                f"input image size {(H, W)} != model img_size {self.img_size}; "
                "build the model with this img_size or dynamic_img_size=True"
            )
        if H % self.patch_size[0] or W % self.patch_size[1]:
            raise ValueError(f"input image size {(H, W)} is not divisible by patch_size {self.patch_size}")


class PatchEmbed(_TokenGrid):
    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__(img_size, patch_size, strict_img_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStem(_TokenGrid):
    """``log2(patch_size)`` 3x3 stride-2 conv-norm-act layers (one stride-1 layer for patch 1),
    then a 1x1 conv ``proj`` to ``embed_dim``. Widths double up to ``embed_dim``
    (``D/2**(n-1), ..., D/2, D``: 24-48-96-192 for D=192 and patch 16, as in the paper).

    ``downsample='maxpool'`` (``stem='conv_pool'``): each conv runs at stride 1 and a 3x3
    stride-2 max-pool halves the grid after it, as in the convolutional tokenizer of Compact
    Convolutional Transformers (Hassani et al. 2021, "Escaping the big data paradigm with
    compact transformers"): the convolutions run at every pixel position, not at every second
    one (on BreastMNIST's 28 px, runs about 15 % longer: README, Results, BreastMNIST)."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
        downsample: str = "stride",
        depth: int = 1,
    ) -> None:
        super().__init__(img_size, patch_size, strict_img_size)
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be 'stride' or 'maxpool', got {downsample!r}")
        if depth < 1:
            raise ValueError(f"stem depth (conv layers per stage) must be >= 1, got {depth}")
        p = self.patch_size[0]
        if self.patch_size[1] != p or p & (p - 1):
            raise ValueError(f"stem='conv' needs a square power-of-2 patch_size, got {self.patch_size}")
        n = max(p.bit_length() - 1, 1)  # stride-2 layers: 2**n == p; patch 1: one stride-1 layer
        pool = downsample == "maxpool" and p > 1
        stride = 2 if p > 1 and not pool else 1
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(n):
            c_out = max(embed_dim // 2 ** (n - 1 - i), 8)
            # No conv bias: the norm right after it has one.
            for j in range(depth):  # the stage's first conv downsamples, the others keep its resolution
                layers += [nn.Conv2d(c_in, c_out, 3, stride if j == 0 else 1, padding=1, bias=False), norm_layer(c_out),
                           act_layer()]
                c_in = c_out
            if pool:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, embed_dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class ShiftedPatchEmbed(_TokenGrid):
    """SPT: the image and its 4 diagonal shifts by half a patch (5*C channels), split into
    patches, each flattened as ``(row, col, channel)``, LayerNorm'd and projected (``proj``).

    Shifts and layout follow the authors' code (aanna0701/SPT_LSA_ViT): channel block 1..4
    read the left-up, right-up, left-down and right-down neighbour at ``shift`` pixels
    (zero outside the image). ``shift = patch_size // 2`` (1 for patch 1).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__(img_size, patch_size, strict_img_size)
        self.shift = (max(self.patch_size[0] // 2, 1), max(self.patch_size[1] // 2, 1))
        patch_dim = 5 * in_chans * self.patch_size[0] * self.patch_size[1]
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, embed_dim, bias=bias)

    def shifted(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, 5C, H, W]``: x, then x read at (-s, -s), (-s, +s), (+s, -s), (+s, +s)."""
        sh, sw = self.shift
        H, W = x.shape[-2:]
        xp = F.pad(x, (sw, sw, sh, sh))
        views = [xp[..., dy:dy + H, dx:dx + W] for dy in (0, 2 * sh) for dx in (0, 2 * sw)]
        return torch.cat([x, *views], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        x = self.shifted(x)
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        x = x.view(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, ph * pw * C)
        return self.proj(self.norm(x))


# ``VisionTransformer(stem=...)``: every class takes the same six constructor arguments; the conv
# stems also take ``depth`` (``stem_depth``).
STEMS: dict[str, Callable[..., _TokenGrid]] = {
    "patch": PatchEmbed,
    "conv": ConvStem,
    "conv_pool": partial(ConvStem, downsample="maxpool"),
    "spt": ShiftedPatchEmbed,
}
CONV_STEMS = ("conv", "conv_pool")
