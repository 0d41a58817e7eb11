"""An embedded, procedurally generated image classification data set ("shapes").

It exists so that `python train.py task=classification` works on a fresh machine with no
download: each sample is drawn from a generator keyed on (seed, index), so the data set is
identical everywhere and any sample can be rendered on its own (random access, workers).

The class is the shape kind only. Colours, background, size, position, rotation and noise
are drawn independently of the label, so a model has to learn shape, not colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmtrans.data.on_device import InMemory
from mmtrans.data.procedural import ProceduralDataset, disjoint_splits
from mmtrans.data.splits import Splits

# Every kind the renderer draws; the default class set leaves out the two that a small ViT
# trained for minutes on a CPU confuses most at 32 px (heart ~ square, star ~ triangle).
# `classes=SHAPE_KINDS` gives the harder 8-way problem.
SHAPE_KINDS = ["circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart"]
CLASSES = ["circle", "square", "triangle", "cross", "ring", "crescent"]

# Side of the shape's bounding circle as a fraction of the image side: large enough that
# a human tells the kind at 32x32, small enough that position and size still vary.
MIN_SIZE, MAX_SIZE = 0.4, 0.85
# Shapes are lighter than their background by at least MIN_CONTRAST in luminance (hues are
# random on both sides, so colour says nothing about the class). One sign of contrast keeps
# figure/ground a near-linear function of the pixels: a ViT trained from scratch on CPU then
# learns the shapes in minutes; with both signs it needed several times as many steps.
MIN_CONTRAST = 0.3
MAX_BACKGROUND = 0.55  # per channel, so that a lighter shape colour always exists
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # PIL's RGB -> "L" weights


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _regular(n: int) -> np.ndarray:
    angles = np.arange(n) * 2 * math.pi / n - math.pi / 2
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.array(
        [
            [-w, -1],
            [w, -1],
            [w, -w],
            [1, -w],
            [1, w],
            [w, w],
            [w, 1],
            [-w, 1],
            [-w, w],
            [-1, w],
            [-1, -w],
            [-w, -w],
        ]
    )


def _heart(n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(0) + pts.min(0)) / 2  # centre the bounding box, then fit the unit circle
    return pts / np.linalg.norm(pts, axis=1).max()


# Outlines in unit coordinates (inside the unit circle), computed once.
_POLYGONS = {
    "square": _regular(4),
    "triangle": _regular(3),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
}


RING_INNER = 0.56  # inner radius of a ring as a fraction of its outer radius


def draw_shape(
    draw: ImageDraw.ImageDraw,
    kind: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float = 0.0,
    fill: int | tuple[int, ...] = 255,
    hole: int | tuple[int, ...] = 0,
    ring_inner: float = RING_INNER,
) -> None:
    """Draw one shape of `kind` inside the circle (cx, cy, radius), rotated by `angle`.

    `fill` is the shape's colour and `hole` the colour cut out of rings and crescents (the
    background behind them). Shared by the classification shapes and the captioning scenes.
    """

    def disc(x: float, y: float, r: float, colour: int | tuple[int, ...]) -> None:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    if kind == "circle":
        disc(cx, cy, radius, fill)
    elif kind == "ring":
        disc(cx, cy, radius, fill)
        disc(cx, cy, radius * ring_inner, hole)
    elif kind == "crescent":
        disc(cx, cy, radius, fill)
        shift = radius * 0.45
        disc(cx + shift * math.cos(angle), cy + shift * math.sin(angle), radius * 0.82, hole)
    elif kind in _POLYGONS:
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = np.array([[cos, sin], [-sin, cos]])
        points = _POLYGONS[kind] @ rotation * radius + (cx, cy)
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {SHAPE_KINDS}")


def supersample_factor(img_size: int) -> int:
    # Draw at 4x and average down for antialiasing, but cap the canvas near 512 px for speed.
    return max(1, min(4, 512 // img_size))


class ShapesDataset(ProceduralDataset):
    """`num_samples` procedural images; sample i is fully determined by (seed, first_index + i).

    Items are dicts `{"image": Tensor[C,H,W], "label": int, "id": "shapes/<seed>/<index>"}`;
    with `transform=None` the image is a float tensor in [0, 1] of shape [3, img_size, img_size].
    """

    def __init__(
        self,
        num_samples: int,
        img_size: int = 32,
        seed: int = 0,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        first_index: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        classes = list(CLASSES if classes is None else classes)
        unknown = sorted(set(classes) - set(SHAPE_KINDS))
        if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"shape classes must be >= 2 distinct names from {SHAPE_KINDS}, got {classes}")
        super().__init__(num_samples, img_size, seed, transform, first_index)
        self.class_names = classes
        # Pixel-centre coordinates in [0, 1], reused by every background gradient.
        axis = ((np.arange(img_size) + 0.5) / img_size).astype(np.float32)
        self._grid_y, self._grid_x = np.meshgrid(axis, axis, indexing="ij")

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[Image.Image, int]:
        """Draw sample `index` as an RGB PIL image; returns (image, label)."""
        pixels, label = self.render_array(index)
        return Image.fromarray(pixels, "RGB"), label

    def render_array(self, index: int) -> tuple[np.ndarray, int]:
        """Draw sample `index` as a uint8 array [H, W, 3]; returns (array, label)."""
        rng = self._rng(index)
        label = int(rng.integers(len(self.class_names)))
        mask = self._draw_mask(rng, self.class_names[label])[..., None]
        background = self._background(rng)
        colour = self._shape_colour(rng, background)
        pixels = background + (colour - background) * mask
        noise = rng.standard_normal(pixels.shape, dtype=np.float32)
        pixels += noise * np.float32(rng.uniform(0.01, 0.04))
        pixels = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return pixels, label

    def _draw_mask(self, rng: np.random.Generator, kind: str) -> np.ndarray:
        """Coverage of the shape in [0, 1], shape [img_size, img_size]."""
        ss = supersample_factor(self.img_size)
        side = self.img_size * ss
        radius = rng.uniform(MIN_SIZE, MAX_SIZE) * side / 2
        # Keep the whole bounding circle (hence the whole shape) inside the image.
        cx, cy = rng.uniform(radius, side - radius, size=2)
        angle = rng.uniform(0, 2 * math.pi)
        ring_inner = rng.uniform(0.5, 0.62) if kind == "ring" else RING_INNER
        canvas = Image.new("L", (side, side), 0)
        draw_shape(ImageDraw.Draw(canvas), kind, cx, cy, radius, angle, 255, 0, ring_inner)
        if ss > 1:
            # Box-average each ss x ss block: the exact area coverage of the shape per pixel,
            # with no ringing, and ~15x faster than a LANCZOS resize (which dominated render time).
            canvas = canvas.reduce(ss)
        return np.asarray(canvas, dtype=np.float32) * np.float32(1 / 255)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Flat or linear-gradient background in [0, MAX_BACKGROUND], shape [H, W, 3]."""
        start = rng.random(3, dtype=np.float32) * np.float32(MAX_BACKGROUND)
        if rng.random() < 0.5:
            return np.broadcast_to(start, (self.img_size, self.img_size, 3))
        # A gentle gradient: both ends stay close so one shape colour contrasts with all of it.
        end = np.clip(start + rng.uniform(-0.2, 0.2, size=3).astype(np.float32), 0.0, MAX_BACKGROUND)
        theta = rng.uniform(0, 2 * math.pi)
        t = self._grid_x * math.cos(theta) + self._grid_y * math.sin(theta)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        return start + (end - start) * t[..., None]

    def _shape_colour(self, rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
        """A random RGB colour at least MIN_CONTRAST brighter (in luminance) than the background."""
        high = float((background @ _LUMA).max())
        candidates = rng.random((16, 3), dtype=np.float32)
        ok = np.flatnonzero(candidates @ _LUMA - high >= MIN_CONTRAST)
        if len(ok):
            return candidates[ok[0]]
        # Bright-ish backgrounds: mix a random colour with white just enough to reach the gap.
        colour, luma = candidates[0], float(candidates[0] @ _LUMA)
        mix = (min(1.0, high + MIN_CONTRAST) - luma) / max(1.0 - luma, 1e-6)
        return colour + np.float32(mix) * (1.0 - colour)

    def __getitem__(self, index: int) -> dict:
        pixels, label = self.render_array(index)
        return {"image": self._to_image(pixels), "label": label, "id": f"shapes/{self.seed}/{self._global_index(index)}"}

    def in_memory(self) -> InMemory:
        """All samples as one uint8 array (data.on_device)."""
        return self._render_all("shapes")


def shapes_splits(
    train_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    eval_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    num_train: int = 10000,
    num_val: int = 1000,
    num_test: int = 2000,
    img_size: int = 32,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> Splits:
    """Train / val / test shapes data sets drawn from disjoint index ranges of one seed."""
    train, val, test = disjoint_splits(
        lambda n, first, transform, _: ShapesDataset(n, img_size, seed, transform, first, classes=classes),
        num_train, num_val, num_test, train_transform, eval_transform,
    )
    return Splits(train=train, val=val, test=test, class_names=list(train.class_names))
