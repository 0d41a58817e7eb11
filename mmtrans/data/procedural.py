"""What every embedded procedural data set shares: arguments and a generator per sample.

Sample ``i`` is drawn from ``numpy.random.default_rng([seed, first_index + i])``, so any
sample renders on its own (random access, data-loader workers) and identically everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["ProceduralDataset"]


class ProceduralDataset(Dataset):
    #: Smallest image side the subclass can draw, and why (for the error message).
    min_img_size: int = 8
    min_img_size_reason: str = "to draw recognisable shapes"

    def __init__(
        self,
        num_samples: int,
        img_size: int,
        seed: int = 0,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        first_index: int = 0,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if img_size < self.min_img_size:
            raise ValueError(f"img_size must be >= {self.min_img_size} {self.min_img_size_reason}, got {img_size}")
        if seed < 0 or first_index < 0:
            raise ValueError(f"seed and first_index must be >= 0, got {seed} and {first_index}")
        self.num_samples = num_samples
        self.img_size = img_size
        self.seed = seed
        self.transform = transform
        self.first_index = first_index

    def _global_index(self, index: int) -> int:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {self.num_samples} samples")
        return self.first_index + index

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._global_index(index)])
