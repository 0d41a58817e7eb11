"""Image transforms: timm-style train / eval pipelines built on torchvision.transforms.v2."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

_MODES = {1: "L", 3: "RGB"}
# PIL's RGB -> "L" weights: used to turn 3-channel statistics into grey ones.
_LUMA = (0.299, 0.587, 0.114)
# augment.auto_augment values: torchvision's policies (they work on grey "L" and RGB PIL images).
AUTO_AUGMENT: dict[str, type[v2.Transform]] = {"rand": v2.RandAugment, "trivial": v2.TrivialAugmentWide}


class ConvertMode:
    """Convert a PIL image to a mode ("L" or "RGB"); tensors pass through unchanged.

    A class rather than a lambda so that transforms pickle into DataLoader workers.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        if isinstance(img, Image.Image) and img.mode != self.mode:
            return img.convert(self.mode)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def per_channel(values: Sequence[float], in_chans: int, name: str) -> list[float]:
    """Broadcast normalisation statistics to `in_chans` channels.

    Length 1 is repeated. Length 3 with in_chans=1 is reduced with the luma weights, so an
    RGB-pretrained model's mean/std (what the trainer passes) still fits grey input.
    """
    values = [float(v) for v in values]
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if len(values) == 3 and in_chans == 1:
        return [sum(w * v for w, v in zip(_LUMA, values))]
    raise ValueError(f"{name} has {len(values)} values; expected 1 or in_chans={in_chans}")


def build_transform(
    img_size: int,
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.5, 1.0),
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    color_jitter: float = 0.0,
    vflip: float = 0.0,
    auto_augment: str | None = None,
    auto_augment_kwargs: Mapping[str, Any] | None = None,
    random_erasing: float = 0.0,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float tensor [in_chans, img_size, img_size].

    Train: RandomResizedCrop + horizontal / vertical flips + optional auto-augmentation
    (``auto_augment``: "rand" RandAugment, "trivial" TrivialAugmentWide; ``auto_augment_kwargs``
    go to that class, e.g. ``{num_ops: 2, magnitude: 9}``) + optional colour jitter, then
    normalisation and optional random erasing (probability ``random_erasing``, per-pixel
    normal noise as timm's "pixel" mode; after normalisation, so the noise is in its units).
    The order is timm's ``transforms_imagenet_train``. Eval: resize the short side to
    img_size / crop_pct, then centre-crop (as timm does); the train-only options are ignored.
    """
    if in_chans not in _MODES:
        raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    for key, p in (("hflip", hflip), ("vflip", vflip), ("random_erasing", random_erasing)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment.{key} is a probability in [0, 1], got {p}")
    if auto_augment is not None and auto_augment not in AUTO_AUGMENT:
        raise ValueError(f"augment.auto_augment must be null or one of {sorted(AUTO_AUGMENT)}, got {auto_augment!r}")
    if auto_augment_kwargs and auto_augment is None:
        raise ValueError("augment.auto_augment_kwargs is set but augment.auto_augment is null")
    try:
        interp = InterpolationMode(interpolation.lower())
    except ValueError:
        options = ", ".join(m.value for m in InterpolationMode)
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {options}") from None
    mean = per_channel(mean, in_chans, "mean")
    std = per_channel(std, in_chans, "std")
    # Convert first so that crops, jitter and normalisation see the final channel count.
    steps: list[Callable] = [ConvertMode(_MODES[in_chans])]
    if train:
        steps.append(v2.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=interp, antialias=True))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip))
        if vflip > 0:
            steps.append(v2.RandomVerticalFlip(p=vflip))
        if auto_augment is not None:
            try:
                steps.append(AUTO_AUGMENT[auto_augment](**dict(auto_augment_kwargs or {})))
            except TypeError as e:  # a keyword the class does not take
                raise ValueError(f"augment.auto_augment_kwargs={dict(auto_augment_kwargs or {})} do not fit "
                                 f"{AUTO_AUGMENT[auto_augment].__name__}: {e}") from None
        if color_jitter > 0:
            saturation = color_jitter if in_chans == 3 else 0.0  # saturation means nothing in grey
            steps.append(
                v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=saturation)
            )
    else:
        steps.append(v2.Resize(int(img_size / crop_pct), interpolation=interp, antialias=True))
        steps.append(v2.CenterCrop(img_size))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value="random"))
    return v2.Compose(steps)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (8-bit modes) -> plain float tensor [C, H, W] in [0, 1].

    What datasets return without a transform; a plain numpy route, several times faster
    than v2.ToImage + ToDtype for small images.
    """
    array = np.array(img, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
