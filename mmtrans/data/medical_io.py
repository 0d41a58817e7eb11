"""Medical image files -> 8-bit PIL images: DICOM, 16-bit PNG / TIFF and ordinary 8-bit files.

Transforms and models take 8-bit "L" or "RGB" PIL images, so grey levels of any depth are
mapped onto 0..255 here, once, by a window (center, width) or the image's own min-max.
pydicom is optional (extra `medical`); it is imported only when a DICOM file is read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from mmtrans.data.io import BadImageError, check_window, load_image, scale_to_uint8

DICOM_SUFFIXES = (".dcm", ".dicom")
# Files with these suffixes are never sniffed for the DICOM preamble (saves an open per image).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
_INSTALL_HINT = 'pip install -e ".[medical]" (or pip install pydicom)'


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a `.dcm` / `.dicom` name, or any other file with the "DICM" marker at byte 128."""
    suffix = Path(path).suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in _IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False  # missing or unreadable: the image loader reports it with the file name


def load_medical_image(
    path: str | os.PathLike, mode: str = "L", window: Sequence[float] | None = None
) -> Image.Image:
    """Read `path` as an 8-bit "L" or "RGB" PIL image.

    DICOM: RescaleSlope / RescaleIntercept (or a Modality LUT) are applied first, so a window
    is in modality units (Hounsfield units for CT). Grey levels then map onto 0..255 by, in
    this order: `window` = (center, width); the file's WindowCenter / WindowWidth (the first
    of several, with the file's VOI LUT Function); the file's VOI LUT Sequence; the image's
    min-max. MONOCHROME1 (high = dark) is inverted so that high = bright as in MONOCHROME2.
    A multi-frame file (a volume or a cine loop) gives its middle frame only. RGB files keep
    their colours (pydicom converts YBR to RGB; more than 8 bits scale by the bit depth); a
    palette-colour file is expanded through its palette. Per-frame functional groups of
    enhanced multi-frame files are not read.

    16-bit / 32-bit / float PNG and TIFF: `window` if given, else the image's min-max (see
    `mmtrans.data.io.scale_to_uint8`). 8-bit files go through `load_image` unchanged (EXIF
    rotation, palette transparency, RGBA -> RGB); a window applies to them only when grey.

    Raises FileNotFoundError for a missing file, `BadImageError` (a ValueError) naming the
    file for one that does not decode, and ImportError for a DICOM file without pydicom installed.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    window = check_window(window)
    if not is_dicom(path):
        return load_image(path, mode, window=window)
    if not os.path.exists(path):
        raise FileNotFoundError(f"DICOM file {os.fspath(path)} does not exist")
    image = _load_dicom(os.fspath(path), window)
    return image.convert(mode) if image.mode != mode else image


def _import_pydicom(path: str) -> tuple[ModuleType, ModuleType]:
    """pydicom and its pixel functions (pydicom 3 names first, then pydicom 2's)."""
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(f"reading DICOM file {path} needs pydicom: {_INSTALL_HINT}") from err
    try:
        from pydicom import pixels as functions
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers import util as functions
    return pydicom, functions


def _first(value: object) -> float:
    # WindowCenter / WindowWidth may hold several alternatives (VM 1-n); the first is the default.
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0]
    return float(value)


def _load_dicom(path: str, window: tuple[float, float] | None) -> Image.Image:
    pydicom, px = _import_pydicom(path)
    # Not DICOM, truncated, no pixel data, a compressed syntax without a decoder plugin:
    # pydicom raises all of these; one ValueError naming the file is what a data set needs.
    errors = (pydicom.errors.InvalidDicomError, ValueError, AttributeError, KeyError, IndexError, TypeError)
    errors += (OSError, EOFError, NotImplementedError, RuntimeError)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames") or 1)
        if frames > 1:
            pixels = pixels[frames // 2]
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric == "PALETTE COLOR":
            pixels = px.apply_color_lut(pixels, ds)
        if pixels.ndim == 3:  # colour, channels last
            if pixels.dtype != np.uint8:
                # Colours scale by their bit depth, not min-max, so that they stay as stored.
                top = 2 ** (16 if photometric == "PALETTE COLOR" else int(ds.BitsStored)) - 1
                pixels = scale_to_uint8(pixels, window=(top / 2, top))
            return Image.fromarray(np.ascontiguousarray(pixels))
        grey = _dicom_grey(px, px.apply_modality_lut(pixels, ds), ds, window)
    except errors as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise BadImageError(path, str(err), kind="DICOM file") from err
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)


def _dicom_grey(px: ModuleType, values: np.ndarray, ds, window: tuple[float, float] | None) -> np.ndarray:
    """Modality values -> uint8 through the window / VOI LUT / min-max (see load_medical_image)."""
    if window is not None:
        # LINEAR_EXACT is "center - width/2 .. center + width/2 -> 0..255", the same
        # definition scale_to_uint8 uses for PNG / TIFF.
        return _window(px, values, window[0], window[1], "LINEAR_EXACT")
    if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            return _window(px, values, center, width, str(ds.get("VOILUTFunction") or "LINEAR"))
        except ValueError as err:  # a zero width or an unknown VOI LUT Function: the file's window is unusable
            _warn_unusable_window(getattr(ds, "filename", None), err)
    if ds.get("VOILUTSequence"):
        return scale_to_uint8(px.apply_voi_lut(values, ds, prefer_lut=True))
    return scale_to_uint8(values)


_WINDOW_WARNED = False


def _warn_unusable_window(filename: object, err: Exception) -> None:
    """Once per process: a data set of such files would otherwise repeat it for every image."""
    global _WINDOW_WARNED
    if not _WINDOW_WARNED:
        _WINDOW_WARNED = True
        warnings.warn(
            f"DICOM {filename or '(in memory)'}: its window (WindowCenter/WindowWidth) is unusable ({err}); "
            "scaled by its VOI LUT or min-max instead. Set data.window=[center,width] to choose one "
            "(further files with an unusable window are not listed)",
            stacklevel=2,
        )


def _window(px: ModuleType, values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's windowing (PS3.3 C.11.2) straight onto 0..255.

    apply_windowing scales to the output range implied by the dataset's bit depth; a small
    dataset that says "8 bits, unsigned, no rescale" makes that range 0..255.
    """
    from pydicom.dataset import Dataset

    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out = px.apply_windowing(np.asarray(values, dtype=np.float64), voi)
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)
