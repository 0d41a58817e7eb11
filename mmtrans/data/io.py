"""Reading image files into PIL images with one clear error for anything unreadable."""

from __future__ import annotations

import os
import warnings

from PIL import Image, ImageOps


def load_image(path: str | os.PathLike, mode: str = "RGB", draft_size: int | None = None) -> Image.Image:
    """Open `path`, undo EXIF rotation and convert to `mode` ("RGB", "L", ...).

    `draft_size` lets the JPEG decoder shrink by 2/4/8 while both sides stay >= draft_size:
    a 2592 px photo bound for a 224 px crop then decodes several times faster. Pass about
    twice the model's input size, or None for full resolution.

    Raises FileNotFoundError for a missing file and ValueError naming the file for anything
    that does not decode (corrupt, truncated, not an image), so that one bad file in a data
    set is easy to find.
    """
    try:
        with Image.open(path) as img:
            if draft_size and img.format == "JPEG":
                img.draft(mode if mode in ("RGB", "L") else None, (draft_size, draft_size))
            # exif_transpose returns a loaded copy, so the file can close after this block.
            img = ImageOps.exif_transpose(img)
        if img.mode == "P" and "transparency" in img.info:
            # Palette + transparency (common in GIFs) must go through RGBA; PIL warns otherwise.
            img = img.convert("RGBA")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return img.convert(mode) if img.mode != mode else img
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and "image file is truncated" are OSErrors.
        raise ValueError(f"cannot read image {os.fspath(path)}: {err}") from err
