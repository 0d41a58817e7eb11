"""What turns an image file into a model's input, decided once.

``Preprocessing`` holds the image size, channels, resampling, eval crop and normalisation.
It is resolved from three sources, in this order of precedence, before any data set is
built: what the config pins (``data.img_size``, ``data.mean``, ...), what only the data can
know (a MedMNIST file's image size and channels), and the encoder's pretrained config (the
mean/std its weights were trained with). Data sets, the caption CLI, heat maps and exported
folders all read the same value; checkpoints store it (``as_dict``) so a model is always fed
the way it was trained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image

from mmtrans.data.transforms import build_transform, per_channel

__all__ = ["DEFAULT_IMG_SIZE", "DEFAULT_IN_CHANS", "DEFAULT_MEAN", "DEFAULT_STD", "EVAL_KEYS", "Preprocessing",
           "resolve_preprocessing", "unnormalize"]

DEFAULT_IMG_SIZE = 224
DEFAULT_IN_CHANS = 3
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# Keys of `data.augment` that shape the eval pipeline too (resize ratio and resampling filter).
EVAL_KEYS = ("crop_pct", "interpolation")


@dataclass(frozen=True)
class Preprocessing:
    """Image -> tensor, as one value. ``mean``/``std`` have one entry per input channel."""

    img_size: int
    in_chans: int = DEFAULT_IN_CHANS
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if not isinstance(self.img_size, int) or self.img_size < 1:
            raise ValueError(f"img_size must be a positive integer, got {self.img_size!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {self.in_chans!r}")
        # Statistics of an RGB model given to grey input are reduced to one channel here, once.
        object.__setattr__(self, "mean", tuple(per_channel(self.mean, self.in_chans, "mean")))
        object.__setattr__(self, "std", tuple(per_channel(self.std, self.in_chans, "std")))

    def transform(self, train: bool = False, **augment: Any) -> Callable[[Image.Image], torch.Tensor]:
        """The pipeline: eval (resize + centre crop) or train (``augment``: build_transform's
        training keywords, e.g. ``scale``, ``hflip``, ``auto_augment``)."""
        common = dict(img_size=self.img_size, in_chans=self.in_chans, mean=self.mean, std=self.std,
                      interpolation=self.interpolation, crop_pct=self.crop_pct)
        extra = {k: v for k, v in augment.items() if k not in EVAL_KEYS and v is not None}
        return build_transform(train=train, **common, **(extra if train else {}))

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Model input ``[B, C, H, W]`` back to [0, 1] pixels (for pictures of it)."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.detach().float().cpu() * std + mean).clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "preprocessing") -> Preprocessing:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown or "img_size" not in d:
            raise ValueError(f"{source}: not a preprocessing record (unknown keys {unknown}, needs img_size)")
        return cls(**{**d, "mean": tuple(d.get("mean", DEFAULT_MEAN)), "std": tuple(d.get("std", DEFAULT_STD))})


def unnormalize(images: torch.Tensor, recorded: Mapping[str, Any] | None) -> torch.Tensor:
    """Model input back to [0, 1] pixels with a recorded preprocessing (``as_dict``), or the
    default statistics when none was recorded (a task built outside train.py)."""
    pp = Preprocessing.from_dict(recorded) if recorded else Preprocessing(images.shape[-1], images.shape[1])
    return pp.unnormalize(images)


def resolve_preprocessing(
    img_size: int | None = None,
    in_chans: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    pretrained: Mapping[str, Any] | None = None,
) -> Preprocessing:
    """One ``Preprocessing`` from the config (the explicit arguments: None = not pinned), what
    the data says (``data``: ``img_size``, ``in_chans``) and the encoder's pretrained config
    (``pretrained``: ``mean``, ``std``, ``interpolation``, ``crop_pct``). The config wins, then
    the data, then the pretrained config, then the defaults."""
    if (mean is None) != (std is None):
        raise ValueError("set both data.mean and data.std, or neither")
    data, pretrained = dict(data or {}), dict(pretrained or {})
    augment = {k: v for k, v in (augment or {}).items() if v is not None}  # None: not pinned
    size = img_size if img_size is not None else data.get("img_size", DEFAULT_IMG_SIZE)
    chans = in_chans if in_chans is not None else data.get("in_chans", DEFAULT_IN_CHANS)
    if mean is None:
        mean, std = pretrained.get("mean", DEFAULT_MEAN), pretrained.get("std", DEFAULT_STD)
    return Preprocessing(
        img_size=int(size), in_chans=int(chans), mean=tuple(mean), std=tuple(std),
        **{k: augment.get(k, pretrained.get(k)) for k in EVAL_KEYS if k in augment or k in pretrained},
    )
