"""Reading image files into PIL images with one clear error for anything unreadable."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Grey modes deeper than 8 bits: 16-bit PNG / TIFF open as "I;16" (or "I;16B" big-endian),
# 32-bit integer TIFF as "I", float TIFF as "F". PIL's convert("L") clips these at 255.
HIGH_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# PIL refuses ("decompression bomb") images over twice Image.MAX_IMAGE_PIXELS (~179 MP) at
# open and only warns between 1x and 2x; that hard limit is our default.
DEFAULT_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


class BadImageError(ValueError):
    """A file that is not a readable image: `path` names it, `reason` says what the decoder said.

    A ValueError, so that callers who treat every bad input alike keep working; data sets
    with `data.on_bad_image=skip` catch exactly this class.
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "image") -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read {kind} {shown(self.path)}: {reason}")


def shown(path: str | os.PathLike) -> str:
    """`path` safe to print: bytes of a non-UTF-8 file name (kept by Python as lone
    surrogates, which `print` cannot encode) appear as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_window(window: Sequence[float] | None) -> tuple[float, float] | None:
    """`window` as a (center, width) tuple of floats; ValueError unless width > 0."""
    if window is None:
        return None
    values = [float(v) for v in window]
    if len(values) != 2 or not values[1] > 0:
        raise ValueError(f"window must be (center, width) with width > 0, got {list(window)}")
    return values[0], values[1]


def scale_to_uint8(values: np.ndarray, window: Sequence[float] | None = None) -> np.ndarray:
    """Grey levels of any depth -> uint8 0..255.

    With `window` (center, width), values center - width/2 .. center + width/2 map linearly
    onto 0..255 and values outside clip. Without it, the image's own min..max maps onto
    0..255: a 12-bit scan stored in a 16-bit container (values 0..4095 of 0..65535) would
    otherwise come out nearly black, and there is no bit depth in a PNG to scale by instead.
    A constant image gives zeros; NaN and infinities count as the minimum.
    """
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    if window is not None:
        center, width = check_window(window)
        low, span = center - width / 2, width
    elif finite.any():
        low = arr[finite].min()
        span = arr[finite].max() - low
    else:
        low, span = 0.0, 0.0
    if span <= 0:  # constant image: nothing to stretch, and no division by zero
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = np.where(finite, (arr - low) / span * 255.0, 0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def load_image(
    path: str | os.PathLike,
    mode: str = "RGB",
    draft_size: int | None = None,
    window: Sequence[float] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open `path`, undo EXIF rotation and convert to `mode` ("RGB", "L", ...).

    `draft_size` lets the JPEG decoder shrink by 2/4/8 while both sides stay >= draft_size:
    a 2592 px photo bound for a 224 px crop then decodes several times faster. Pass about
    twice the model's input size, or None for full resolution.

    High-bit-depth grey files (16-bit PNG / TIFF, 32-bit or float TIFF) are scaled to 8 bit
    by `scale_to_uint8`: per-image min-max, or `window` = (center, width) when given. A window
    also applies to 8-bit grey files; colour files ignore it. RGBA drops its alpha channel
    (the stored colours are kept, as torchvision's loader does).

    `max_pixels` refuses larger images from their header, before decoding (None: no limit
    of ours, PIL's own still applies). Raises FileNotFoundError for a missing file and
    `BadImageError` (a ValueError) naming the file and the decoder's reason for anything that
    does not decode (corrupt, truncated, empty, not an image, too large), so that one bad
    file in a data set is easy to find.
    """
    window = check_window(window)  # before the try: a bad window is not a bad file
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x Image.MAX_IMAGE_PIXELS PIL only warns; max_pixels decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode(path, mode, draft_size, window, max_pixels)
    except (FileNotFoundError, BadImageError):
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors.
        if isinstance(err, UnidentifiedImageError):  # empty, text, or a format PIL lacks
            reason = "not an image in a format PIL can decode (unknown or unsupported format, or an empty file)"
        else:
            reason = str(err) or type(err).__name__
        raise BadImageError(path, reason) from err


def _decode(
    path: str | os.PathLike, mode: str, draft_size: int | None, window: tuple[float, float] | None,
    max_pixels: int | None,
) -> Image.Image:
    with Image.open(path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise BadImageError(path, f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}")
        if draft_size and img.format == "JPEG":
            img.draft(mode if mode in ("RGB", "L") else None, (draft_size, draft_size))
        # Loads the pixels (the file can close after this block) and applies the EXIF
        # orientation in place: no copy of the usual, upright image.
        ImageOps.exif_transpose(img, in_place=True)
    if img.mode == "P" and "transparency" in img.info:
        # Palette + transparency (common in GIFs) must go through RGBA; PIL warns otherwise.
        img = img.convert("RGBA")
    # A caller asking for "I" / "F" keeps the raw values; every 8-bit target gets them scaled.
    scale = img.mode in HIGH_BIT_GREY_MODES or (window is not None and img.mode == "L")
    if scale and mode not in HIGH_BIT_GREY_MODES:
        img = Image.fromarray(scale_to_uint8(np.asarray(img), window))  # mode "L"
    return img.convert(mode) if img.mode != mode else img
