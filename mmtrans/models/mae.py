"""Masked autoencoder (He et al. 2022): self-supervised pretraining of our ``VisionTransformer``.

Per image a random ``mask_ratio`` of the patches is hidden. The encoder sees only the visible
ones (``VisionTransformer.forward_masked``: shuffle, keep, and one index tensor, ``ids_restore``,
puts them back in order); a few plain ``Block``s decode visible tokens plus a shared mask
token into pixels; the loss is the MSE on the masked patches only, against per-patch
normalised pixels (``norm_pix_loss``). Parameters live under ``encoder.`` and ``decoder_*``
so that the encoder alone is taken downstream (``mae_encoder_state_dict``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from mmtrans.nn import Block, sincos_pos_embed_2d

from .vit import VisionTransformer

__all__ = ["MaskedAutoencoder", "is_mae_state_dict", "mae_encoder_state_dict", "patchify", "unpatchify"]


def patchify(images: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, N, ph * pw * C]``, patches in row-major grid order (as
    ``PatchEmbed``), pixels within a patch ordered (row, column, channel) as in MAE."""
    B, C, H, W = images.shape
    ph, pw = patch_size
    if H % ph or W % pw:
        raise ValueError(f"image size {(H, W)} is not divisible by patch_size {patch_size}")
    h, w = H // ph, W // pw
    x = images.reshape(B, C, h, ph, w, pw)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, h * w, ph * pw * C)


def unpatchify(patches: Tensor, patch_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Inverse of ``patchify``: ``[B, N, ph * pw * C]`` on a ``grid`` -> ``[B, C, H, W]``."""
    B, N, D = patches.shape
    (ph, pw), (h, w) = patch_size, grid
    if N != h * w or D % (ph * pw):
        raise ValueError(f"{N} patches of {D} values do not fit a {grid} grid of {patch_size} patches")
    C = D // (ph * pw)
    x = patches.reshape(B, h, w, ph, pw, C)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(B, C, h * ph, w * pw)


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        encoder: VisionTransformer,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_mlp_ratio: float = 4.0,
    ) -> None:
        """``encoder``: any ``VisionTransformer`` (its patch size, prefix tokens and position
        table are read from it). ``mask_ratio``: fraction of patches hidden per image."""
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if decoder_embed_dim % 4:  # the fixed 2-D sin-cos table splits channels in four
            raise ValueError(f"decoder_embed_dim must be divisible by 4, got {decoder_embed_dim}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size: tuple[int, int] = tuple(encoder.patch_embed.patch_size)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * encoder.in_chans)
        # Fixed, so not saved: recomputed from the grid (and for other grids in forward).
        pos = sincos_pos_embed_2d(decoder_embed_dim, encoder.patch_embed.grid_size).unsqueeze(0)
        self.register_buffer("decoder_pos_embed", pos, persistent=False)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"mask_token"}

    # -- masking ----------------------------------------------------------------------------
    def num_visible(self, num_patches: int) -> int:
        keep = int(num_patches * (1 - self.mask_ratio))
        if not 0 < keep < num_patches:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} keeps {keep} of {num_patches} patches; it must keep at least one "
                "and hide at least one (use smaller patches or another mask_ratio)"
            )
        return keep

    def random_masking(self, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From per-patch ``noise`` ``[B, N]`` (lowest kept): ``ids_keep`` ``[B, K]``, ``mask``
        ``[B, N]`` (1 = hidden, in image order) and ``ids_restore`` ``[B, N]``: gathering the
        shuffled sequence (kept first, then hidden) with it gives image order back."""
        B, N = noise.shape
        keep = self.num_visible(N)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones(B, N, device=noise.device)
        mask[:, :keep] = 0
        return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore

    # -- forward ----------------------------------------------------------------------------
    def _grid(self, images: Tensor) -> tuple[int, int]:
        return self.encoder.patch_embed.dynamic_grid(tuple(images.shape[-2:]))

    def _decode(self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """Encoder tokens ``[B, P + K, De]`` -> pixel predictions for every patch ``[B, N, p*p*C]``."""
        n_prefix = self.encoder.num_prefix_tokens
        x = self.decoder_embed(latent)
        prefix, visible = x[:, :n_prefix], x[:, n_prefix:]
        B, N = ids_restore.shape
        masked = self.mask_token.expand(B, N - visible.shape[1], -1)
        patches = torch.cat([visible, masked], dim=1)  # shuffled order: kept first
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        pos = self.decoder_pos_embed
        if grid != tuple(self.encoder.patch_embed.grid_size):
            pos = sincos_pos_embed_2d(x.shape[-1], grid).unsqueeze(0).to(x)
        x = torch.cat([prefix, patches + pos], dim=1)  # prefix tokens carry no position
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, n_prefix:])

    def target(self, images: Tensor) -> Tensor:
        """What the decoder predicts: patches, normalised per patch with ``norm_pix_loss``."""
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error over the hidden patches only."""
        per_patch = ((pred.float() - self.target(images).float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, predictions ``[B, N, p*p*C]``, mask ``[B, N]``, 1 = hidden). ``noise``
        ``[B, N]`` fixes which patches are hidden (default: uniform random per sample)."""
        grid = self._grid(images)
        if noise is None:
            noise = torch.rand(images.shape[0], grid[0] * grid[1], device=images.device)
        ids_keep, mask, ids_restore = self.random_masking(noise)
        latent = self.encoder.forward_masked(images, ids_keep)
        pred = self._decode(latent, ids_restore, grid)
        return self.loss(images, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, images: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """For pictures: (reconstruction ``[B, C, H, W]`` in the input's scale, the visible
        patches pasted from the input; hidden-patch mask ``[B, 1, H, W]``, 1 = hidden)."""
        _, pred, mask = self(images, noise)
        patches = patchify(images, self.patch_size)
        if self.norm_pix_loss:  # predictions are per-patch normalised: use the true patch stats
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = mask.unsqueeze(-1).to(pred)
        grid = self._grid(images)
        recon = unpatchify(patches * (1 - m) + pred * m, self.patch_size, grid)
        mask_img = unpatchify(m.expand(-1, -1, self.patch_size[0] * self.patch_size[1]), self.patch_size, grid)
        return recon, mask_img


# -- checkpoints downstream ---------------------------------------------------------------------

def is_mae_state_dict(state_dict: dict[str, Tensor]) -> bool:
    return "mask_token" in state_dict and "encoder.patch_embed.proj.weight" in state_dict


def mae_encoder_state_dict(
    state_dict: dict[str, Tensor], encoder: VisionTransformer, source: str
) -> dict[str, Tensor]:
    """The encoder of a ``MaskedAutoencoder`` state dict, with ViT key names (what
    ``convert_timm_vit`` maps onto a target: new grid, new channel count). Raises a
    ValueError naming both architectures when the target encoder differs from the MAE's."""
    sd = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    proj = sd["patch_embed.proj.weight"]
    depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
    have = dict(embed_dim=proj.shape[0], depth=depth)
    want = dict(embed_dim=encoder.embed_dim, depth=len(encoder.blocks))
    plain = proj.ndim == 4 and not any(k.startswith("patch_embed.stem.") for k in sd)  # one conv: kernel = patch
    if encoder.stem_type == "patch" and plain:
        have = dict(patch_size=tuple(proj.shape[-2:]), **have)
        want = dict(patch_size=tuple(encoder.patch_embed.patch_size), **want)
    else:  # a conv or SPT stem (ours at both ends): its weights' shapes say its layout and patch size
        theirs = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("patch_embed.")}
        ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items() if k.startswith("patch_embed.")}
        if theirs != ours:
            key = next(k for k in sorted(theirs.keys() | ours.keys()) if theirs.get(k) != ours.get(k))
            raise ValueError(
                f"the MAE encoder in {source} has another token stem than the model's stem={encoder.stem_type!r}, "
                f"patch_size={encoder.patch_embed.patch_size[0]} ({key}: {list(theirs.get(key, ())) or 'absent'} vs "
                f"{list(ours.get(key, ())) or 'absent'}; checkpoint vs model): build the model with the "
                "pretraining's model.stem and model.patch_size"
            )
    if have != want:
        diff = ", ".join(f"{k} {have[k]} vs {want[k]}" for k in have if have[k] != want[k])
        fix = " ".join(f"model.{k}={have[k][0] if k == 'patch_size' else have[k]}" for k in have if have[k] != want[k])
        raise ValueError(
            f"the MAE encoder in {source} does not match the model's encoder ({diff}; checkpoint vs model): "
            f"build the model with the pretrained architecture, e.g. {fix}"
        )
    if isinstance(encoder.norm, nn.Identity) and encoder.use_fc_norm and "norm.weight" in sd:
        # An average-pooling target normalises after pooling (timm's fc_norm, our head.norm):
        # start that norm from the encoder's final one rather than from scratch.
        sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    return sd
