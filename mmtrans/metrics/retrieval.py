"""Image-text retrieval metrics: Recall@K both ways and median rank (Karpathy / CLIP protocol).

Inputs: ``sim [N_images, N_texts]`` (higher = more similar) and ``text_image [N_texts]``, the
image index each text describes; an image may have several texts (COCO and Flickr: five).
- image -> text: the rank of an image is the position of its best-ranked text among all
  texts (any of its references counts);
- text -> image: the rank of a text is the position of its one image among all images.
A caption written identically for several images (``text_key``: one id per distinct text;
the procedural scenes say "a red circle" of many) is a reference of each of them: any of its
copies found for such an image counts, and so does any such image found for it. Without it
copies of one text tie up to float noise, and which copy comes first decides a hit. COCO
and Flickr have almost no identical captions, so there it changes next to nothing.
Ranks start at 1; ``R@K`` is the fraction of queries ranked <= K; the median rank is that of
the Karpathy evaluation code (``floor(median(rank))``). Ties keep the candidates' order
(a stable sort), so a model that scores everything alike gets no credit for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["retrieval_metrics", "retrieval_ranks", "text_keys", "top_k"]


def _check(sim: Tensor, text_image: Tensor) -> None:
    if sim.ndim != 2 or text_image.ndim != 1 or sim.shape[1] != len(text_image):
        raise ValueError(f"expected sim [N_images, N_texts] and text_image [N_texts], got {list(sim.shape)} "
                         f"and {list(text_image.shape)}")
    if len(text_image) and (text_image.min() < 0 or text_image.max() >= sim.shape[0]):
        raise ValueError(f"text_image holds image indices 0..{sim.shape[0] - 1}")


def _owns(text_image: Tensor, text_key: Tensor | None, n_images: int) -> tuple[Tensor, Tensor]:
    """(``owns [N_images, N_keys]``: image i has text key k as a reference, ``key [N_texts]``)."""
    if text_key is None:
        key = torch.arange(len(text_image), device=text_image.device)
    else:
        if text_key.shape != text_image.shape:
            raise ValueError(f"text_key must give one id per text, [{len(text_image)}], got {list(text_key.shape)}")
        key = text_key.unique(return_inverse=True)[1]
    owns = torch.zeros(n_images, int(key.max()) + 1 if len(key) else 0, dtype=torch.bool, device=text_image.device)
    owns[text_image, key] = True
    return owns, key


def retrieval_ranks(sim: Tensor, text_image: Tensor, text_key: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(image -> text ranks ``[N_images]``, text -> image ranks ``[N_texts]``), 1-based.
    ``text_key [N_texts]``: equal ids for identical texts (each is then a reference of every
    image that has it); None: every text is its own."""
    _check(sim, text_image)
    n_images = sim.shape[0]
    owns, key = _owns(text_image, text_key, n_images)
    order = sim.argsort(dim=1, descending=True, stable=True)  # texts by score, per image
    hit = owns[torch.arange(n_images, device=sim.device)[:, None], key[order]]
    # An image without texts has no rank: it cannot be retrieved against (nan, left out).
    has_text = hit.any(dim=1)
    i2t = torch.where(has_text, hit.float().argmax(dim=1).float() + 1, torch.nan)
    order = sim.T.argsort(dim=1, descending=True, stable=True)  # images by score, per text
    t2i = owns[order, key[:, None]].float().argmax(dim=1).float() + 1
    return i2t[has_text], t2i


def retrieval_metrics(
    sim: Tensor, text_image: Tensor, ks: tuple[int, ...] = (1, 5, 10), text_key: Tensor | None = None
) -> dict[str, float]:
    """``i2t_r{k}``, ``t2i_r{k}`` for each k, ``i2t_medr``, ``t2i_medr`` (``text_key``: as
    ``retrieval_ranks``)."""
    i2t, t2i = retrieval_ranks(sim.float(), text_image, text_key)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = float((ranks <= k).float().mean())
        out[f"{name}_medr"] = float(torch.floor(torch.quantile(ranks, 0.5))) if len(ranks) else float("nan")
    return out


def text_keys(texts: list[str]) -> Tensor:
    """One id per distinct text (exact string), for ``text_key``."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t, len(ids)) for t in texts], dtype=torch.long)


def top_k(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(indices, scores) of the ``k`` best candidates of each row, best first."""
    k = min(k, sim.shape[1])
    scores, index = sim.topk(k, dim=1)
    return index, scores
