"""Data sets held in memory, kept whole on the accelerator and augmented there in batches.

For small-image sets (MedMNIST, CIFAR, the procedural ones) decoding is nothing and the
per-image CPU augmentation is the bottleneck of a fast GPU. Here the uint8 images live on the
device once; a loader only serves indices, labels and ids (``MemoryIndex``), and each batch is
gathered and augmented on the device:

- train: ``DeviceAugment``, the CPU path's RandomResizedCrop (same area/ratio draws as
  torchvision, resampled by ``roi_align``: bilinear, averaging when it shrinks, instead of
  PIL's bicubic), horizontal / vertical flips, then normalisation;
- eval: the CPU path's resize + centre crop is applied once, on the CPU with the same PIL
  steps (``eval_images``), so on the device only the float conversion and normalisation
  remain: eval batches equal the CPU path's exactly.

A data set offers this through ``in_memory() -> InMemory``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as F

from mmtrans.data.epoch_seeds import derive_seed

__all__ = ["DeviceAugment", "InMemory", "MemoryIndex", "batch_generator", "eval_images", "normalize_uint8",
           "train_images"]


@dataclass
class InMemory:
    """A whole split: ``images`` uint8 [N, H, W] (grey) or [N, H, W, 3]; per sample the label as
    the data set's items give it (``labels[i]``) and the id."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]


class MemoryIndex(Dataset):
    """Serves ``{"memory": [split, epoch, index, copy], "label", "id"}``: the image is fetched on
    the device from the key. Keys from ``EpochSampler`` (``(epoch, index, copy)``) or indices."""

    def __init__(self, data: InMemory, split: int) -> None:
        self.labels, self.ids, self.split = data.labels, data.ids, split
        self.label_as_int = data.labels.ndim == 1 and np.issubdtype(data.labels.dtype, np.integer)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        epoch, index, copy = key if isinstance(key, tuple) else (0, int(key), 0)
        label = self.labels[index]
        return {"memory": torch.tensor([self.split, epoch, index, copy]),
                "label": torch.tensor(int(label)) if self.label_as_int else torch.from_numpy(np.array(label)),
                "id": self.ids[index]}


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image, "L" if image.ndim == 2 else "RGB")


def train_images(images: np.ndarray, in_chans: int) -> torch.Tensor:
    """uint8 [N, H, W(, 3)] -> uint8 [N, in_chans, H, W], channels converted as PIL converts them
    (what the CPU path's first step does)."""
    have = 1 if images.ndim == 3 else 3
    if have == in_chans:
        chw = images[:, None] if have == 1 else images.transpose(0, 3, 1, 2)
    elif in_chans == 3:  # grey -> RGB: PIL repeats the channel
        chw = np.repeat(images[:, None], 3, axis=1)
    else:  # RGB -> grey with PIL's own rounding
        chw = np.stack([np.asarray(_pil(im).convert("L")) for im in images])[:, None]
    return torch.from_numpy(np.ascontiguousarray(chw))


def eval_images(images: np.ndarray, geometry: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """Each image through ``geometry`` (the CPU eval path's PIL steps: channels, resize, centre
    crop) -> uint8 [N, C, S, S]."""
    out = [np.asarray(geometry(_pil(im))) for im in images]
    stacked = np.stack(out) if out else np.zeros((0, 1, 1), np.uint8)
    return train_images(stacked, 1 if stacked.ndim == 3 else 3)


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, C, H, W] -> normalised float32 with the CPU path's own ops (ToDtype with
    scaling, Normalize), so the numbers are the same."""
    return F.normalize(F.to_dtype(images, torch.float32, scale=True), mean=list(mean), std=list(std))


class DeviceAugment:
    """Batched train augmentation on whatever device the images are on: uint8 [B, C, H, W] ->
    normalised float32 [B, C, img_size, img_size].

    The keywords mirror ``build_transform``'s (``scale``, ``hflip``, ``vflip``); random draws
    come from ``generator`` (CPU), so a seed fixes them on any device.
    """

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float],
                 scale: Sequence[float] = (0.5, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, vflip: float = 0.0) -> None:
        self.img_size, self.mean, self.std = img_size, list(mean), list(std)
        self.scale, self.ratio, self.hflip, self.vflip = tuple(scale), tuple(ratio), hflip, vflip

    def crop_boxes(self, n: int, height: int, width: int, generator: torch.Generator,
                   attempts: int = 10) -> torch.Tensor:
        """[n, 4] (x1, y1, x2, y2) boxes: torchvision's RandomResizedCrop.get_params for n
        images at once (up to ``attempts`` tries each, then its central fallback)."""
        area = height * width
        target = area * torch.empty(n, attempts).uniform_(*self.scale, generator=generator)
        log_ratio = torch.log(torch.tensor(self.ratio))
        aspect = torch.exp(torch.empty(n, attempts).uniform_(float(log_ratio[0]), float(log_ratio[1]),
                                                             generator=generator))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
        # Fallback (no try fits): the whole image, or the largest central crop of a bounded ratio.
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            fw, fh = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            fw, fh = round(height * max(self.ratio)), height
        else:
            fw, fh = width, height
        rows = torch.arange(n)
        pick = first.clamp(min=0)
        w = torch.where(first >= 0, w[rows, pick], torch.tensor(float(fw)))
        h = torch.where(first >= 0, h[rows, pick], torch.tensor(float(fh)))
        u = torch.rand(n, 2, generator=generator)
        # torch.randint(0, H - h + 1) per image, from uniforms (its bound differs per image).
        y = torch.where(first >= 0, torch.floor(u[:, 0] * (height - h + 1)), torch.tensor(float((height - fh) // 2)))
        x = torch.where(first >= 0, torch.floor(u[:, 1] * (width - w + 1)), torch.tensor(float((width - fw) // 2)))
        return torch.stack([x, y, x + w, y + h], dim=1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        boxes = self.crop_boxes(n, height, width, generator)
        flips = torch.rand(n, 2, generator=generator) < torch.tensor([self.hflip, self.vflip])
        device = images.device
        rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], boxes], dim=1).to(device)
        # aligned=True: sampling points at pixel centres, so a full-image box at the same
        # size returns the image itself; the sampling ratio adapts (averages when shrinking).
        x = roi_align(images.float(), rois, output_size=self.img_size, spatial_scale=1.0,
                      sampling_ratio=-1, aligned=True)
        h_flip, v_flip = flips[:, 0].to(device)[:, None, None, None], flips[:, 1].to(device)[:, None, None, None]
        x = torch.where(h_flip, x.flip(-1), x)
        x = torch.where(v_flip, x.flip(-2), x)
        x = x.round_().clamp_(0, 255).to(torch.uint8)  # the CPU path crops uint8 images too
        return normalize_uint8(x, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(img_size={self.img_size}, scale={self.scale}, ratio="
                f"{tuple(round(r, 4) for r in self.ratio)}, hflip={self.hflip}, vflip={self.vflip})")


def batch_generator(seed: int, key: torch.Tensor) -> torch.Generator:
    """A CPU generator for one batch: from the seed and the batch's first (epoch, index, copy)
    key, so a batch's augmentation depends on the seed and the epoch's order only."""
    epoch, index, copy = (int(v) for v in key.tolist())
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index, copy))


# Augmentations of the CPU path that the device path does not do (so it refuses them).
_CPU_ONLY = {"color_jitter": 0.0, "auto_augment": None, "auto_augment_kwargs": None, "random_erasing": 0.0}
_DEVICE_KEYS = ("scale", "hflip", "vflip")


class DeviceSplits:
    """The train / val / test sets of ``splits`` as uint8 tensors, moved to a device on first
    use, with loaders' datasets (``index``) and the batch completion (``finish``).

    ``pp`` is the run's ``Preprocessing``; ``augment`` the ``data.augment`` keywords (only
    scale / hflip / vflip and the eval keys; anything else the CPU path would do is refused);
    ``seed`` seeds each batch's augmentation together with its first sample key.
    """

    def __init__(self, splits: Any, pp: Any, augment: dict[str, Any], seed: int) -> None:
        datasets = {"train": splits.train, "val": splits.val, "test": splits.test}
        for name, dataset in datasets.items():
            if dataset is not None and not callable(getattr(dataset, "in_memory", None)):
                raise ValueError(
                    f"data.on_device=true keeps a whole data set on the accelerator and needs one held in memory "
                    f"(MedMNIST, CIFAR, shapes, medical_scans); the {name} split ({type(dataset).__name__}) is not: "
                    f"set data.on_device=false"
                )
        extra = {k: v for k, v in augment.items() if k in _CPU_ONLY and v not in (_CPU_ONLY[k], None)}
        if extra:
            raise ValueError(f"data.on_device=true augments with crops and flips only; data.augment has {extra}: "
                             f"reset them or set data.on_device=false")
        eval_tf = pp.transform(train=False)
        steps = list(eval_tf.transforms)
        tail = [type(t).__name__ for t in steps[-3:]]
        if tail != ["ToImage", "ToDtype", "Normalize"]:  # what normalize_uint8 repeats on the device
            raise RuntimeError(f"the eval pipeline ends with {tail}; data.on_device expects ToImage, ToDtype, Normalize")
        # Eval: the CPU path's PIL steps (channels, resize, centre crop) once, here; on the
        # device only its last three (to tensor, to float, normalise) remain.
        geometry = type(eval_tf)(steps[:-3])
        self.mean, self.std, self.seed = list(pp.mean), list(pp.std), int(seed)
        self.augment = DeviceAugment(pp.img_size, pp.mean, pp.std,
                                     **{k: augment[k] for k in _DEVICE_KEYS if augment.get(k) is not None})
        self._images: list[torch.Tensor] = []
        self._indices: dict[int, MemoryIndex] = {}
        for name, dataset in datasets.items():
            if dataset is None or id(dataset) in self._indices:
                continue
            data = dataset.in_memory()
            self._images.append(train_images(data.images, pp.in_chans) if name == "train"
                                else eval_images(data.images, geometry))
            self._indices[id(dataset)] = MemoryIndex(data, split=len(self._images) - 1)
        self._on_device: dict[tuple[int, str], torch.Tensor] = {}

    def index(self, dataset: Dataset) -> MemoryIndex:
        """What a loader of ``dataset`` (one of the splits) serves instead."""
        return self._indices[id(dataset)]

    def images(self, split: int, device: torch.device) -> torch.Tensor:
        key = (split, str(device))
        if key not in self._on_device:
            self._on_device[key] = self._images[split].to(device)
        return self._on_device[key]

    def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch from a ``MemoryIndex`` loader, on its device -> with ``image``: gathered there,
        augmented (the train split, code 0) or only normalised."""
        keys = batch.pop("memory")
        split = int(keys[0, 0])
        images = self.images(split, keys.device)[keys[:, 2]]
        if split == 0:
            batch["image"] = self.augment(images, batch_generator(self.seed, keys[0, 1:].cpu()))
        else:
            batch["image"] = normalize_uint8(images, self.mean, self.std)
        return batch
