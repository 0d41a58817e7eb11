"""An embedded, procedurally generated medical-style data set: grey 'scans' with findings.

The default data of `python train.py task=medical`: no download, identical everywhere
(sample ``i`` comes from a generator keyed on (seed, first_index + i)). Each image is a
textured body cross-section on a dark field; each finding kind appears independently
with probability ``prevalence``, so a scan has zero or more findings (multi-label) and
about a quarter of the scans are normal.

Findings, drawn inside the body:
- nodule: a bright disc with a soft edge;
- calcification: a tight cluster of 3-6 tiny, very bright specks;
- cyst: a dark disc with a bright rim;
- streak: a thin bright line segment.
The body texture has blobs and lines of its own, fainter than the findings, so that a
model must learn the findings' shape and contrast rather than "anything bright".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from mmtrans.data.on_device import InMemory
from mmtrans.data.procedural import ProceduralDataset, disjoint_splits
from mmtrans.data.splits import Splits

__all__ = ["FINDINGS", "MedicalScansDataset", "medical_scans_splits"]

FINDINGS = ["nodule", "calcification", "cyst", "streak"]


class MedicalScansDataset(ProceduralDataset):
    """``{"image": transform(PIL "L"), "label": float32 [len(findings)] 0/1, "id": str}``."""

    min_img_size = 24
    min_img_size_reason = "to draw findings a few pixels wide"

    def __init__(
        self,
        num_samples: int,
        img_size: int = 32,
        seed: int = 0,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        first_index: int = 0,
        findings: Sequence[str] | None = None,
        prevalence: float = 0.3,
    ) -> None:
        findings = list(FINDINGS if findings is None else findings)
        unknown = sorted(set(findings) - set(FINDINGS))
        if unknown or not findings or len(set(findings)) != len(findings):
            raise ValueError(f"findings must be distinct names from {FINDINGS}, got {findings}")
        if not 0.0 < prevalence < 1.0:
            raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
        super().__init__(num_samples, img_size, seed, transform, first_index)
        self.class_names = findings
        self.prevalence = prevalence
        axis = np.arange(img_size, dtype=np.float32) + 0.5  # pixel centres, in pixels
        self._y, self._x = np.meshgrid(axis, axis, indexing="ij")

    def __len__(self) -> int:
        return self.num_samples

    def _present(self, rng: np.random.Generator) -> np.ndarray:
        # Drawn first from the sample's generator: `labels` needs no rendering.
        return rng.random(len(FINDINGS)) < self.prevalence

    @property
    def labels(self) -> np.ndarray:
        """[N, len(findings)] float32 0/1, without drawing a single image."""
        keep = [FINDINGS.index(f) for f in self.class_names]
        present = np.stack([self._present(self._rng(i)) for i in range(self.num_samples)]) if self.num_samples else (
            np.zeros((0, len(FINDINGS)), bool))
        return present[:, keep].astype(np.float32)

    def render_array(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as uint8 [H, W] plus its float32 label vector."""
        rng = self._rng(index)
        present = self._present(rng)
        s = float(self.img_size)
        cx, cy = s / 2 + rng.uniform(-0.05, 0.05, 2) * s
        ax, ay = rng.uniform(0.36, 0.46, 2) * s
        angle = rng.uniform(0, math.pi)
        body = self._ellipse(cx, cy, ax, ay, angle)
        tissue = rng.uniform(0.3, 0.45) + self._texture(rng, 0.07)
        # A faint inner organ and a few faint vessels: anatomy the findings must stand out from.
        organ = self._ellipse(cx + rng.uniform(-0.1, 0.1) * s, cy + rng.uniform(-0.1, 0.1) * s,
                              rng.uniform(0.12, 0.2) * s, rng.uniform(0.12, 0.2) * s, rng.uniform(0, math.pi))
        tissue += organ * rng.uniform(-0.08, 0.08)
        for _ in range(rng.integers(0, 3)):
            tissue += 0.06 * self._segment(rng, cx, cy, ax, ay, rng.uniform(0.3, 0.6) * s, width=1.2)
        pixels = rng.uniform(0.02, 0.08) + body * (tissue - 0.05)

        # Findings sit well inside the body: at most 60% of its semi-axes from the centre.
        def spot() -> tuple[float, float]:
            r, t = math.sqrt(rng.random()) * 0.6, rng.uniform(0, 2 * math.pi)
            dx, dy = r * ax * math.cos(t), r * ay * math.sin(t)
            return cx + dx * math.cos(angle) - dy * math.sin(angle), cy + dx * math.sin(angle) + dy * math.cos(angle)

        for kind, on in zip(FINDINGS, present):
            if not on:
                continue
            if kind == "nodule":
                x, y = spot()
                pixels += rng.uniform(0.3, 0.45) * self._disc(x, y, rng.uniform(0.07, 0.11) * s)
            elif kind == "calcification":
                x, y = spot()
                for _ in range(rng.integers(3, 7)):
                    px, py = x + rng.normal(0, 0.04 * s), y + rng.normal(0, 0.04 * s)
                    pixels += rng.uniform(0.55, 0.75) * np.exp(-((self._x - px) ** 2 + (self._y - py) ** 2) / 1.0)
            elif kind == "cyst":
                x, y = spot()
                r = rng.uniform(0.1, 0.14) * s
                inner = self._disc(x, y, r - 1.5)
                pixels += 0.25 * (self._disc(x, y, r) - inner) - rng.uniform(0.25, 0.35) * inner
            elif kind == "streak":
                pixels += rng.uniform(0.3, 0.45) * self._segment(rng, cx, cy, 0.6 * ax, 0.6 * ay,
                                                                 rng.uniform(0.3, 0.45) * s, width=1.5)
        pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(0.01, 0.03))
        keep = [FINDINGS.index(f) for f in self.class_names]
        image = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return image, present[keep].astype(np.float32)

    # -- drawing helpers (float32 masks in [0, 1], shape [H, W]) ---------------------------------

    def _ellipse(self, cx: float, cy: float, ax: float, ay: float, angle: float) -> np.ndarray:
        dx, dy = self._x - cx, self._y - cy
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / ax
        v = (-dx * math.sin(angle) + dy * math.cos(angle)) / ay
        # ~1 px anti-aliased edge: the radial distance scaled by the smaller semi-axis.
        return np.clip((1.0 - np.sqrt(u * u + v * v)) * min(ax, ay) + 0.5, 0, 1).astype(np.float32)

    def _disc(self, x: float, y: float, r: float, soft: float = 1.0) -> np.ndarray:
        dist = np.sqrt((self._x - x) ** 2 + (self._y - y) ** 2)
        return np.clip((r - dist) / soft + 0.5, 0, 1).astype(np.float32)

    def _segment(
        self, rng: np.random.Generator, cx: float, cy: float, ax: float, ay: float, length: float, width: float
    ) -> np.ndarray:
        """A line of ``length`` px through a random point of the ellipse (cx, cy, ax, ay)."""
        t = rng.uniform(0, 2 * math.pi)
        mx, my = cx + math.sqrt(rng.random()) * ax * math.cos(t), cy + math.sqrt(rng.random()) * ay * math.sin(t)
        theta = rng.uniform(0, math.pi)
        ux, uy = math.cos(theta), math.sin(theta)
        along = np.clip((self._x - mx) * ux + (self._y - my) * uy, -length / 2, length / 2)
        dist = np.hypot(self._x - (mx + along * ux), self._y - (my + along * uy))
        return np.clip(width - dist, 0, 1).astype(np.float32)

    def _texture(self, rng: np.random.Generator, amplitude: float) -> np.ndarray:
        """Smooth random texture: a coarse random grid upsampled bicubically."""
        coarse = rng.standard_normal((6, 6)).astype(np.float32)
        img = Image.fromarray(coarse, "F").resize((self.img_size, self.img_size), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.float32) * np.float32(amplitude)

    def __getitem__(self, index: int) -> dict:
        pixels, label = self.render_array(index)
        image_id = f"scans/{self.seed}/{self._global_index(index)}"
        return {"image": self._to_image(pixels), "label": torch.from_numpy(label), "id": image_id}

    def in_memory(self) -> InMemory:
        """All samples as one uint8 array (data.on_device)."""
        return self._render_all("scans")


def medical_scans_splits(
    train_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    eval_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    num_train: int = 12000,
    num_val: int = 1000,
    num_test: int = 2000,
    img_size: int = 32,
    seed: int = 0,
    findings: Sequence[str] | None = None,
    prevalence: float = 0.3,
) -> Splits:
    """Train / val / test scans from disjoint index ranges of one seed (multilabel)."""
    kw = {"img_size": img_size, "seed": seed, "findings": findings, "prevalence": prevalence}
    train, val, test = disjoint_splits(
        lambda n, first, transform, _: MedicalScansDataset(n, transform=transform, first_index=first, **kw),
        num_train, num_val, num_test, train_transform, eval_transform,
    )
    return Splits(train, val, test, class_names=list(train.class_names), label_type="multilabel")
