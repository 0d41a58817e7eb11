"""Image to patch tokens: a strided convolution, ``[B, C, H, W] -> [B, N, D]``."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PatchEmbed"]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


class PatchEmbed(nn.Module):
    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        for side, p in zip(self.img_size, self.patch_size):
            if side % p:
                raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def dynamic_grid(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if self.strict_img_size and (H, W) != self.img_size:
            raise ValueError(
                f"input image size {(H, W)} != model img_size {self.img_size}; "
                "build the model with this img_size or dynamic_img_size=True"
            )
        if H % self.patch_size[0] or W % self.patch_size[1]:
            raise ValueError(f"input image size {(H, W)} is not divisible by patch_size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)
