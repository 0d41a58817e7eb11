"""What every embedded procedural data set shares: arguments and a generator per sample.

Sample ``i`` is drawn from ``numpy.random.default_rng([seed, first_index + i])``, so any
sample renders on its own (random access, data-loader workers) and identically everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mmtrans.data.on_device import InMemory

__all__ = ["TEST_FIRST_INDEX", "VAL_FIRST_INDEX", "ProceduralDataset", "disjoint_splits"]

# Val and test live at fixed, far-away index ranges of the same seed: no image is shared
# with train, and the val/test sets do not change when num_train changes.
VAL_FIRST_INDEX = 1_000_000_000
TEST_FIRST_INDEX = 2_000_000_000


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

    def _to_image(self, pixels: np.ndarray) -> torch.Tensor:
        """Rendered uint8 pixels ([H, W] grey or [H, W, 3]) -> the transform's output, or
        without a transform a float tensor [C, H, W] in [0, 1] (skipping the PIL round trip:
        a third of the time at 32 px)."""
        if self.transform is not None:
            return self.transform(Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB"))
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32) / np.float32(255))


    def _render_all(self, name: str) -> InMemory:
        """Every sample rendered once (``render_array``), for ``data.on_device``; ids as
        ``__getitem__`` gives them (``<name>/<seed>/<global index>``)."""
        rendered = [self.render_array(i) for i in range(len(self))]  # type: ignore[attr-defined]
        return InMemory(images=np.stack([p for p, _ in rendered]), labels=np.stack([np.asarray(lb) for _, lb in rendered]),
                        ids=[f"{name}/{self.seed}/{self._global_index(i)}" for i in range(len(self))])


D = TypeVar("D", bound=Dataset)


def disjoint_splits(
    make: Callable[[int, int, Callable | None, str], D],
    num_train: int,
    num_val: int,
    num_test: int,
    train_transform: Callable | None,
    eval_transform: Callable | None,
) -> tuple[D, D, D]:
    """(train, val, test) from ``make(num_samples, first_index, transform, split)``, each split
    drawn from its own index range of one seed."""
    if num_train > VAL_FIRST_INDEX or num_val > TEST_FIRST_INDEX - VAL_FIRST_INDEX:
        raise ValueError(f"num_train and num_val must be <= {VAL_FIRST_INDEX}")
    return (
        make(num_train, 0, train_transform, "train"),
        make(num_val, VAL_FIRST_INDEX, eval_transform, "val"),
        make(num_test, TEST_FIRST_INDEX, eval_transform, "test"),
    )
