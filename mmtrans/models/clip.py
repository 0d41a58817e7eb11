"""Image-text contrastive models on the shared blocks: CLIP and CoCa.

CLIP (Radford et al. 2021): ViT tokens -> one image vector (class token, mean of patches,
or an attentional pooler) -> linear projection; a ``TextDecoder`` without cross-attention
(causal) -> its state at the end-of-text token -> final norm -> linear projection. Both are
L2-normalised and compared by cosine similarity times a learned temperature
``exp(logit_scale)`` (init ``log(1 / 0.07)``, capped at 100, as CLIP).

CoCa (Yu et al. 2022): a captioner whose decoder's first ``unimodal_depth`` blocks are
text-only. A learned class token appended to the caption pools those blocks' output (the
text embedding); the remaining blocks cross-attend the image for captioning. One forward
pass gives both the captioning logits and the two embeddings.

``contrastive_loss`` is the symmetric cross-entropy of CLIP; under DDP the features of every
process are gathered with gradients, so each process's rows see the whole global batch.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mmtrans.nn import Block

from .captioner import ImageCaptioner
from .heads import pool_tokens
from .text_decoder import TextDecoder

__all__ = ["IMAGE_POOLS", "TEXT_POOLS", "AttentionalPooler", "CoCa", "ContrastiveHead", "ContrastiveModel",
           "contrastive_loss", "gather_features"]

IMAGE_POOLS = ("attn", "cls", "avg")
TEXT_POOLS = ("eos", "cls")


class AttentionalPooler(nn.Module):
    """Learned queries cross-attending image tokens (CoCa's pooler): one ``Block`` with
    cross-attention over the tokens, then a norm. ``[B, N, D] -> [B, Q, D]``."""

    def __init__(self, dim: int, num_heads: int, num_queries: int = 1, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.block = Block(dim, num_heads, qkv_bias=True, cross_attention=True, context_dim=dim,
                           norm_layer=partial(nn.LayerNorm, eps=norm_eps))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.block.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.norm(self.block(self.query.expand(len(tokens), -1, -1), tokens))


class ContrastiveHead(nn.Module):
    """What CLIP and CoCa add to an image encoder and a text decoder: image and text pooling,
    projections into the joint space (``embed_dim``) and the temperature.

    ``image_pool``: 'attn' (one learned query, ``AttentionalPooler``), 'cls' or 'avg' (of the
    encoder's normed tokens). ``text_pool``: 'eos' (the last non-padding token, which a causal
    decoder has seen the whole text at: CLIP) or 'cls' (a learned token appended after the
    text: CoCa). ``text_norm``: a norm of its own for the pooled text (CoCa, whose decoder's
    final norm serves the LM head); without it the caller passes the decoder's (CLIP).
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        embed_dim: int,
        image_pool: str = "attn",
        text_pool: str = "eos",
        pool_heads: int = 4,
        num_prefix_tokens: int = 1,
        text_norm: bool = False,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if image_pool not in IMAGE_POOLS:
            raise ValueError(f"image_pool must be one of {IMAGE_POOLS}, got {image_pool!r}")
        if text_pool not in TEXT_POOLS:
            raise ValueError(f"text_pool must be one of {TEXT_POOLS}, got {text_pool!r}")
        self.image_pool, self.text_pool, self.num_prefix_tokens = image_pool, text_pool, num_prefix_tokens
        self.pooler = AttentionalPooler(image_dim, pool_heads, norm_eps=norm_eps) if image_pool == "attn" else None
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False)
        self.text_cls = nn.Parameter(torch.randn(1, 1, text_dim) * 0.01) if text_pool == "cls" else None
        self.text_norm = nn.LayerNorm(text_dim, eps=norm_eps) if text_norm else None
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=False)
        # CLIP's init: projections ~ N(0, width^-0.5).
        nn.init.normal_(self.image_proj.weight, std=image_dim**-0.5)
        nn.init.normal_(self.text_proj.weight, std=text_dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = max_logit_scale

    def no_weight_decay(self) -> set[str]:
        return {"logit_scale", "text_cls", "pooler.query"}

    def scale(self) -> Tensor:
        """``exp(logit_scale)``, capped: past the cap the temperature gets no gradient (CLIP
        clips the parameter after each step to the same effect)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def embed_image(self, tokens: Tensor) -> Tensor:
        """Encoder tokens ``[B, N, Di]`` -> normalised image embeddings ``[B, E]``."""
        pooled = self.pooler(tokens)[:, 0] if self.pooler is not None else pool_tokens(
            tokens, self.image_pool, self.num_prefix_tokens)
        return F.normalize(self.image_proj(pooled).float(), dim=-1)  # float32 under autocast too

    def text_suffix(self, batch_size: int) -> Tensor | None:
        """The class token to append to the text (text_pool='cls'), else None."""
        return None if self.text_cls is None else self.text_cls.expand(batch_size, -1, -1)

    def embed_text(self, states: Tensor, key_padding_mask: Tensor | None, norm: nn.Module | None = None) -> Tensor:
        """Unimodal decoder states ``[B, L(+1), Dt]`` -> normalised text embeddings ``[B, E]``."""
        if self.text_cls is not None:
            pooled = states[:, -1]
        else:
            last = states.new_full((len(states),), states.shape[1] - 1, dtype=torch.long)
            if key_padding_mask is not None:  # right padding: the last real token is eos
                last = (~key_padding_mask).sum(1) - 1
            pooled = states[torch.arange(len(states), device=states.device), last]
        norm = self.text_norm if self.text_norm is not None else norm
        if norm is None:
            raise ValueError("embed_text needs a norm: the head has none of its own (text_norm=False)")
        return F.normalize(self.text_proj(norm(pooled)).float(), dim=-1)


class ContrastiveModel(nn.Module):
    """CLIP: ``encoder`` (a ViT: ``forward_features``, ``embed_dim``, ``num_prefix_tokens``),
    ``text`` (a ``TextDecoder`` without cross-attention) and a ``ContrastiveHead``.
    Parameters live under ``encoder.``, ``text.`` and ``head.``."""

    def __init__(
        self,
        encoder: nn.Module,
        text: TextDecoder,
        embed_dim: int = 128,
        image_pool: str = "attn",
        text_pool: str = "eos",
        pool_heads: int | None = None,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if text.cross_attention:
            raise ValueError("CLIP's text tower is text-only: build its TextDecoder with cross_attention=False "
                             "(for CoCa, a captioner with a contrastive head, use create_captioner(contrastive=True))")
        self.encoder = encoder
        self.text = text
        self.head = ContrastiveHead(
            encoder.embed_dim, text.embed_dim, embed_dim, image_pool, text_pool,
            pool_heads or encoder.blocks[0].attn.num_heads, encoder.num_prefix_tokens,
            init_logit_scale=init_logit_scale, max_logit_scale=max_logit_scale, norm_eps=text.norm.eps,
        )

    def no_weight_decay(self) -> set[str]:
        return ({f"encoder.{n}" for n in self.encoder.no_weight_decay()}
                | {f"text.{n}" for n in self.text.no_weight_decay()}
                | {f"head.{n}" for n in self.head.no_weight_decay()})

    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` -> normalised embeddings ``[B, E]``."""
        return self.head.embed_image(self.encoder.forward_features(images))

    def encode_text(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Token ids ``[B, L]`` (right-padded; True in ``key_padding_mask`` = pad) -> ``[B, E]``."""
        states = self.text.forward_unimodal(tokens, key_padding_mask, self.head.text_suffix(len(tokens)))
        return self.head.embed_text(states, key_padding_mask, self.text.norm)

    def forward(
        self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(image embeddings, text embeddings, ``exp(logit_scale)``), as open_clip's CLIP."""
        return self.encode_image(images), self.encode_text(tokens, key_padding_mask), self.head.scale()


class CoCa(ImageCaptioner):
    """A captioner (``ImageCaptioner``: encoder, projector, decoder) whose decoder has
    ``unimodal_depth`` text-only blocks first, plus a ``ContrastiveHead`` (class-token text
    pooling with its own norm). ``forward`` is the captioner's (logits); ``forward_contrastive``
    (or ``forward(..., contrastive=True)``, what training calls, so that ``nn.Module.compile``
    reaches it) gives logits and both embeddings from one pass."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: TextDecoder,
        embed_dim: int = 128,
        projector: str = "linear",
        image_pool: str = "attn",
        pool_heads: int | None = None,
        freeze_encoder: bool = False,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__(encoder, decoder, projector, freeze_encoder)
        if decoder.unimodal_depth < 1:
            raise ValueError("CoCa needs text-only blocks first: a TextDecoder with unimodal_depth >= 1")
        self.head = ContrastiveHead(
            encoder.embed_dim, decoder.embed_dim, embed_dim, image_pool, "cls",
            pool_heads or encoder.blocks[0].attn.num_heads, encoder.num_prefix_tokens, text_norm=True,
            init_logit_scale=init_logit_scale, max_logit_scale=max_logit_scale, norm_eps=decoder.norm.eps,
        )

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {f"head.{n}" for n in self.head.no_weight_decay()}

    def forward(
        self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor | None = None, contrastive: bool = False
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        if contrastive:
            return self.forward_contrastive(images, tokens, key_padding_mask)
        return super().forward(images, tokens, key_padding_mask)

    def _features(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return self.encoder.forward_features(images)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.head.embed_image(self._features(images))

    def encode_text(self, tokens: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        states = self.decoder.forward_unimodal(tokens, key_padding_mask, self.head.text_suffix(len(tokens)))
        return self.head.embed_text(states, key_padding_mask)

    def forward_contrastive(
        self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(captioning logits ``[B, L, V]``, image embeddings, text embeddings ``[B, E]``): the
        text-only blocks run once, on the caption with the class token appended (causal: the
        caption's states do not see it), and the cross-attention blocks continue from them."""
        feats = self._features(images)
        L = tokens.shape[1]
        states = self.decoder.forward_unimodal(tokens, key_padding_mask, self.head.text_suffix(len(tokens)))
        logits = self.decoder.forward_multimodal(states[:, :L], self.projector(feats), key_padding_mask)
        return logits, self.head.embed_image(feats), self.head.embed_text(states, key_padding_mask)


def gather_features(x: Tensor) -> Tensor:
    """``x`` of every DDP process, concatenated in rank order (equal sizes); gradients flow
    back to each process's own rows (``torch.distributed.nn.functional.all_gather``).
    Without an initialised process group, ``x`` itself."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def contrastive_chance_loss(n: int, texts_per_image: int = 1) -> float:
    """``contrastive_loss`` of logits that tell no pair from another (all equal), for ``n`` images
    in the (global) batch: ``(log(n k) + log n) / 2``. A model whose loss stays here has not
    learned to match images with their texts."""
    return (math.log(n * texts_per_image) + math.log(n)) / 2


def contrastive_loss(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, gather: bool = True, texts_per_image: int = 1
) -> Tensor:
    """CLIP's symmetric cross-entropy: image i's text is text i and the other texts of the
    batch are its negatives (and the other way round); ``logit_scale`` is ``exp`` already.

    ``texts_per_image`` = k > 1: ``text_emb`` holds k captions per image, image-major (image i's
    at rows ``i*k .. i*k+k-1``); an image's target spreads evenly over its k captions (the
    multi-positive form), each caption's target is its image. k = 1 is CLIP's loss exactly.

    Under DDP (``gather``) each process scores its own rows against the texts/images of all
    processes (open_clip's ``local_loss=True, gather_with_grad=True``): the mean over processes,
    which DDP's gradient averaging takes, is the loss of one process holding the whole batch.
    """
    n, k = len(image_emb), texts_per_image
    if len(text_emb) != n * k:
        raise ValueError(f"{len(text_emb)} text embeddings for {n} images x texts_per_image={k}")
    all_images, all_texts = (gather_features(image_emb), gather_features(text_emb)) if gather else (image_emb, text_emb)
    offset = dist.get_rank() * n if all_images.shape[0] > n else 0
    images = torch.arange(offset, offset + n, device=image_emb.device)
    # Logits in float32 under autocast too: bf16 keeps ~3 digits, close to the gaps between
    # cosine similarities that a temperature of ~1/15-1/100 turns into the loss.
    with torch.autocast(image_emb.device.type, enabled=False):
        image_emb, text_emb, all_images, all_texts = (x.float() for x in (image_emb, text_emb, all_images, all_texts))
        logits_per_image = logit_scale.float() * image_emb @ all_texts.T
        logits_per_text = logit_scale.float() * text_emb @ all_images.T
    if k == 1:
        loss_images = F.cross_entropy(logits_per_image, images)
    else:
        target = torch.zeros_like(logits_per_image)
        columns = images[:, None] * k + torch.arange(k, device=image_emb.device)
        target.scatter_(1, columns, 1.0 / k)
        loss_images = F.cross_entropy(logits_per_image, target)
    return (loss_images + F.cross_entropy(logits_per_text, images.repeat_interleave(k))) / 2
