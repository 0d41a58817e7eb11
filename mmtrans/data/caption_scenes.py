"""An embedded, procedurally generated captioning data set ("scenes").

It exists so that `python train.py task=captioning` works on a fresh machine with no
download. Scene i holds 1-3 non-overlapping shapes, each a kind, a colour and a size, on a
dark background; its five reference captions are written from the scene by templates, with
the spatial relation (left of / right of / above / below) of the first two shapes. The
vocabulary is under 60 words, so a tiny captioner learns it on a CPU in minutes.

Like `shapes`, every scene is drawn from a generator keyed on (seed, index): identical
everywhere, random access, safe with workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmtrans.data.procedural import ProceduralDataset, disjoint_splits
from mmtrans.data.shapes import draw_shape, supersample_factor
from mmtrans.data.splits import Splits

SCENE_KINDS = ["circle", "square", "triangle", "cross", "ring"]
# Saturated, well-separated colours: each name is obvious at 64 px on a dark background.
PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 255),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (170, 70, 230),
}
# Radius as a fraction of the image side; the gap between sizes keeps "small" / "large" clear.
SIZES = {"small": (0.09, 0.12), "large": (0.17, 0.22)}
NUM_CAPTIONS = 5
MAX_SHAPES = 3
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
MODES = ("images", "pairs")


@dataclass(frozen=True)
class SceneShape:
    kind: str
    colour: str
    size: str
    cx: float  # centre, as a fraction of the image side (x to the right, y down)
    cy: float
    radius: float


def _relation(a: SceneShape, b: SceneShape) -> str:
    """Where `a` is relative to `b`, along the axis on which they are further apart."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _position(value: float, low: str, middle: str, high: str) -> str:
    return low if value < 0.4 else high if value > 0.6 else middle


def scene_captions(shapes: list[SceneShape]) -> list[str]:
    """The NUM_CAPTIONS reference captions of a scene, each worded differently."""
    first = shapes[0]
    short0 = f"{first.colour} {first.kind}"
    long0 = f"{first.size} {first.colour} {first.kind}"
    if len(shapes) == 1:
        hpos = _position(first.cx, "on the left", "in the middle", "on the right")
        vpos = _position(first.cy, "near the top", "in the middle", "near the bottom")
        return [
            f"a {short0}",
            f"a {long0}",
            f"a {long0} {hpos}",
            f"there is a {short0} {vpos}",
            f"one shape: a {long0}",
        ]
    second = shapes[1]
    short1 = f"{second.colour} {second.kind}"
    long1 = f"{second.size} {second.colour} {second.kind}"
    relation, inverse = _relation(first, second), _relation(second, first)
    count = COUNT_WORDS[len(shapes)]
    listed = [f"a {s.colour} {s.kind}" for s in shapes]
    listing = ", ".join(listed[:-1]) + " and " + listed[-1]
    return [
        f"a {short0} {relation} a {short1}",
        f"there is a {long0} {relation} a {long1}",
        f"a {short1} {inverse} a {short0}",
        f"{count} shapes: {listing}",
        f"{count} shapes with a {long0} {relation} a {long1}",
    ]


class SceneCaptionDataset(ProceduralDataset):
    """`num_samples` procedural scenes; scene i is fully determined by (seed, first_index + i).

    mode="images": `{"image": Tensor[3,H,W], "captions": [5 str], "image_id": str}` per scene
    (evaluation: all references). mode="pairs": `num_samples * 5` items
    `{"image", "caption": str, "image_id"}`, item k = scene k // 5 with its caption k % 5
    (training). With `transform=None` the image is a float tensor in [0, 1].

    `cache=True` keeps each scene's pixels and captions once drawn (uint8: 12 KB a scene at
    64 px, 61 MB for 5,000), so later epochs skip the drawing, part of every batch's loading
    (which runs in the training process on the CPU); each loader worker holds its own.
    """

    min_img_size = 32
    min_img_size_reason = "to draw three recognisable shapes"

    def __init__(
        self,
        num_samples: int,
        img_size: int = 64,
        seed: int = 0,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        first_index: int = 0,
        mode: str = "images",
        cache: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(num_samples, img_size, seed, transform, first_index)
        self.mode = mode
        self._cache: dict[int, tuple[np.ndarray, list[str]]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_samples * (NUM_CAPTIONS if self.mode == "pairs" else 1)

    def all_captions(self) -> list[str]:
        """Every reference caption, without rendering images (tokenizer training)."""
        return [c for scene in range(self.num_samples) for c in self.captions(scene)]

    def scene(self, scene: int) -> list[SceneShape]:
        """The shapes of scene `scene` (an index into the scenes, not into pairs)."""
        return self._layout(self._rng(scene))

    def captions(self, scene: int) -> list[str]:
        return scene_captions(self.scene(scene))

    def _layout(self, rng: np.random.Generator) -> list[SceneShape]:
        wanted = int(rng.integers(1, MAX_SHAPES + 1))
        shapes: list[SceneShape] = []
        for _ in range(wanted):
            kind = SCENE_KINDS[int(rng.integers(len(SCENE_KINDS)))]
            colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
            for size in ("large", "small") if rng.random() < 0.5 else ("small",):
                placed = self._place(rng, shapes, size, needs_clear_relation=len(shapes) == 1)
                if placed is not None:
                    shapes.append(SceneShape(kind, colour, size, *placed))
                    break
        return shapes

    @staticmethod
    def _place(
        rng: np.random.Generator, shapes: list[SceneShape], size: str, needs_clear_relation: bool
    ) -> tuple[float, float, float] | None:
        """(cx, cy, radius) clear of `shapes` by a margin, or None after 50 tries."""
        radius = float(rng.uniform(*SIZES[size]))
        margin = 0.04
        for _ in range(50):
            cx, cy = (float(v) for v in rng.uniform(radius + 0.02, 1 - radius - 0.02, size=2))
            if any(math.hypot(cx - s.cx, cy - s.cy) < radius + s.radius + margin for s in shapes):
                continue
            if needs_clear_relation:
                # One axis must dominate so "left of" vs "above" is never a coin toss.
                dx, dy = abs(cx - shapes[0].cx), abs(cy - shapes[0].cy)
                if max(dx, dy) < 1.5 * min(dx, dy):
                    continue
            return cx, cy, radius
        return None

    def render_array(self, scene: int) -> np.ndarray:
        """Draw scene `scene` as a uint8 array [H, W, 3]."""
        rng = self._rng(scene)
        shapes = self._layout(rng)
        ss = supersample_factor(self.img_size)
        side = self.img_size * ss
        background = tuple(int(v) for v in rng.integers(0, 50, size=3))
        canvas = Image.new("RGB", (side, side), background)
        draw = ImageDraw.Draw(canvas)
        for shape in shapes:
            angle = float(rng.uniform(0, 2 * math.pi))
            draw_shape(
                draw,
                shape.kind,
                shape.cx * side,
                shape.cy * side,
                shape.radius * side,
                angle,
                fill=PALETTE[shape.colour],
                hole=background,
            )
        if ss > 1:
            canvas = canvas.reduce(ss)
        pixels = np.asarray(canvas, dtype=np.float32)
        pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(4.0)
        return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)

    def _drawn(self, scene: int) -> tuple[np.ndarray, list[str]]:
        """(pixels, captions) of scene `scene`, from the cache when it has them."""
        if self._cache is None:
            return self.render_array(scene), self.captions(scene)
        key = self._global_index(scene)  # also checks the range and resolves negative indices
        if key not in self._cache:
            self._cache[key] = self.render_array(scene), self.captions(scene)
        pixels, captions = self._cache[key]
        return pixels, list(captions)  # a copy: a caller may edit its list

    def render(self, scene: int) -> Image.Image:
        return Image.fromarray(self.render_array(scene), "RGB")

    def __getitem__(self, index: int) -> dict:
        if self.mode == "pairs":
            if index < 0:
                index += len(self)
            if not 0 <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} (image, caption) pairs")
            scene, which = divmod(index, NUM_CAPTIONS)
        else:
            scene, which = index, None
        pixels, captions = self._drawn(scene)
        tensor = self._to_image(pixels)
        image_id = f"scenes/{self.seed}/{self._global_index(scene)}"
        if which is None:
            return {"image": tensor, "captions": captions, "image_id": image_id}
        return {"image": tensor, "caption": captions[which], "image_id": image_id}


def scene_vocabulary() -> list[str]:
    """Every word (and ':' / ',') the caption templates can produce, sorted."""
    words = set(PALETTE) | set(SCENE_KINDS) | set(SIZES) | set(COUNT_WORDS.values())
    words |= set(
        "a there is on the left right in middle near top bottom to of above below shape shapes with and : ,".split()
    )
    return sorted(words)


def scene_caption_splits(
    train_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    eval_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    num_train: int = 5000,
    num_val: int = 200,
    num_test: int = 500,
    img_size: int = 64,
    seed: int = 0,
    train_mode: str = "pairs",
    cache: bool = False,
) -> Splits:
    """Train (pairs by default) / val / test (images: all references) from disjoint index ranges;
    ``cache``: keep drawn scenes in memory (``SceneCaptionDataset``)."""
    train, val, test = disjoint_splits(
        lambda n, first, transform, split: SceneCaptionDataset(
            n, img_size, seed, transform, first, train_mode if split == "train" else "images", cache
        ),
        num_train, num_val, num_test, train_transform, eval_transform,
    )
    return Splits(train=train, val=val, test=test, class_names=[])


scene_caption_splits.yields = "captions"  # read by tasks/task_fit.py (other split factories yield labels)
