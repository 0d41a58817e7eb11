"""load_medical_image and load_image on DICOM, 16-bit PNG / TIFF, float TIFF and RGBA files."""

import os
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmtrans.data import load_image, load_medical_image
from mmtrans.data.medical_io import is_dicom

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pydicom_samples"
needs_pydicom = pytest.mark.skipif(
    find_spec("pydicom") is None, reason="pydicom not installed (extra 'medical')"
)
needs_samples = pytest.mark.skipif(
    not (SAMPLES / "CT_small.dcm").is_file(), reason=f"real DICOM samples not found at {SAMPLES}"
)


def write_dicom(path, pixels, photometric="MONOCHROME2", with_pixels=True, **tags):
    """A minimal uncompressed DICOM file: grey [H, W], multi-frame [F, H, W] or RGB [H, W, 3]."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    arr = np.asarray(pixels)
    rgb = photometric == "RGB"
    if rgb:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    else:
        ds.SamplesPerPixel = 1
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape[-3:-1] if rgb else arr.shape[-2:]
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    if with_pixels:
        ds.PixelData = arr.tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_linear(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window onto 0..255, written out independently of pydicom."""
    c, w = center - 0.5, width - 1
    y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255))
    return np.rint(y).astype(np.uint8)


def exact_window(x, center, width):
    return np.rint(np.clip((x - (center - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def min_max(x):
    x = np.asarray(x, dtype=np.float64)
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


# Stored values of a CT-like slice; with slope 2 / intercept -1024 they are HU -1024 .. 500.
STORED = np.array([[0, 412, 462, 512], [532, 562, 612, 762]], dtype=np.int16)
HU = STORED * 2.0 - 1024


# 16-bit / float / RGBA files ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix, dtype", [(".png", "<u2"), (".tif", "<u2"), (".tif", ">u2")])
def test_16_bit_grey_is_min_max_scaled(tmp_path, suffix, dtype):
    # 12-bit values in a 16-bit container: convert("L") used to clip all of them but 0 to 255.
    raw = np.array([[0, 1000], [2000, 4095]], dtype=dtype)
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(raw).save(path)
    expected = min_max(raw)
    np.testing.assert_array_equal(np.asarray(load_image(path, mode="L")), expected)
    np.testing.assert_array_equal(np.asarray(load_medical_image(path)), expected)
    rgb = np.asarray(load_image(path))  # default mode RGB: three equal channels
    assert rgb.shape == (2, 2, 3) and (rgb == expected[..., None]).all()
    # A window given as an argument replaces min-max: 0 .. 2000 -> 0 .. 255.
    windowed = load_medical_image(path, window=(1000, 2000))
    np.testing.assert_array_equal(np.asarray(windowed), exact_window(raw.astype(float), 1000, 2000))
    # A caller asking for a 32-bit mode keeps the raw values.
    np.testing.assert_array_equal(np.asarray(load_image(path, mode="I")), raw.astype(np.int32))


def test_float_tiff_and_constant_image(tmp_path):
    values = np.array([[-1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(np.asarray(load_medical_image(tmp_path / "f.tif")), min_max(values))
    Image.fromarray(np.full((3, 3), 777, dtype=np.uint16)).save(tmp_path / "flat.png")
    assert not np.asarray(load_image(tmp_path / "flat.png", mode="L")).any()  # zeros, no 0/0


def test_rgba_loads_as_rgb_with_its_colours(tmp_path):
    img = Image.new("RGBA", (4, 4), (10, 200, 30, 255))
    img.putpixel((0, 0), (250, 5, 5, 128))
    img.save(tmp_path / "rgba.png")
    for out in (load_image(tmp_path / "rgba.png"), load_medical_image(tmp_path / "rgba.png", mode="RGB")):
        assert out.mode == "RGB" and out.getpixel((1, 1)) == (10, 200, 30)
        assert out.getpixel((0, 0)) == (250, 5, 5)  # alpha is dropped, not blended
    grey = load_medical_image(tmp_path / "rgba.png")
    assert grey.mode == "L" and grey.getpixel((1, 1)) == Image.new("RGB", (1, 1), (10, 200, 30)).convert(
        "L"
    ).getpixel((0, 0))


def test_window_on_8_bit_grey_and_bad_arguments(tmp_path):
    raw = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "g.png")
    assert np.array_equal(np.asarray(load_medical_image(tmp_path / "g.png")), raw)  # 8 bit: as stored
    out = load_image(tmp_path / "g.png", mode="L", window=(128, 128))
    np.testing.assert_array_equal(np.asarray(out), exact_window(raw.astype(float), 128, 128))
    with pytest.raises(ValueError, match="window must be"):
        load_medical_image(tmp_path / "g.png", window=(40, 0))
    with pytest.raises(ValueError, match="window must be"):
        load_medical_image(tmp_path / "g.png", window=(1, 2, 3))
    with pytest.raises(ValueError, match="mode must be"):
        load_medical_image(tmp_path / "g.png", mode="RGBA")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_medical_image(tmp_path / "missing.png")


# DICOM ------------------------------------------------------------------------------------------


@needs_pydicom
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_rescale_and_file_window(tmp_path, photometric):
    path = write_dicom(
        tmp_path / "ct.dcm",
        STORED,
        photometric,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=[40, 300],
        WindowWidth=[400, 1500],  # several windows: the first is used
    )
    expected = dicom_linear(HU, 40, 400)
    if photometric == "MONOCHROME1":  # high = dark in the file; high = bright out
        expected = 255 - expected
    out = load_medical_image(path)
    assert out.mode == "L" and out.size == (4, 2)
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert 0 < expected[0, 3] < 255  # the window's slope, not only its clipped ends, is checked


@needs_pydicom
def test_dicom_window_argument_wins_and_min_max_without_window(tmp_path):
    path = write_dicom(
        tmp_path / "ct.dcm", STORED, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    out = load_medical_image(path, window=(-550, 1500))  # a lung window instead of the file's
    np.testing.assert_array_equal(np.asarray(out), exact_window(HU, -550, 1500))
    bare = write_dicom(
        tmp_path / "bare.dcm", STORED.astype(np.uint16), RescaleSlope=2, RescaleIntercept=-1024
    )
    np.testing.assert_array_equal(np.asarray(load_medical_image(bare)), min_max(HU))
    assert load_medical_image(bare, mode="RGB").mode == "RGB"


@needs_pydicom
def test_dicom_multi_frame_gives_the_middle_frame_and_rgb_passes_through(tmp_path):
    frames = np.stack([STORED + 100 * k for k in range(3)]).astype(np.uint16)
    path = write_dicom(tmp_path / "cine.dcm", frames)
    out = load_medical_image(path, window=(600, 1000))
    np.testing.assert_array_equal(np.asarray(out), exact_window(frames[1].astype(float), 600, 1000))
    colours = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    rgb = load_medical_image(write_dicom(tmp_path / "rgb.dcm", colours, "RGB"), mode="RGB")
    assert np.array_equal(np.asarray(rgb), colours)


@needs_pydicom
def test_dicom_palette_colour_is_expanded(tmp_path):
    palette = np.array([[200, 0, 0, 10], [0, 100, 0, 20], [0, 0, 50, 30]], dtype=np.uint16)  # R, G, B rows
    tags = {}
    for name, entries in zip(("Red", "Green", "Blue"), palette):
        tags[f"{name}PaletteColorLookupTableDescriptor"] = [4, 0, 16]  # 4 entries from 0, 16 bit
        tags[f"{name}PaletteColorLookupTableData"] = (entries * 257).tobytes()  # 8 -> 16 bit
    index = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    out = load_medical_image(write_dicom(tmp_path / "pal.dcm", index, "PALETTE COLOR", **tags), mode="RGB")
    assert np.array_equal(np.asarray(out), palette.T[index])


@needs_pydicom
def test_dicom_without_suffix_is_recognised(tmp_path):
    path = write_dicom(tmp_path / "IM0001", STORED, RescaleSlope=2, RescaleIntercept=-1024)
    assert is_dicom(path) and not is_dicom(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(load_medical_image(path)), min_max(HU))


@needs_pydicom
def test_unreadable_dicom_names_the_file(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(os.urandom(600))
    with pytest.raises(ValueError, match="cannot read DICOM file .*junk.dcm: .*DICM"):
        load_medical_image(junk)
    whole = write_dicom(tmp_path / "whole.dcm", np.zeros((32, 32), np.uint16))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="cannot read DICOM file .*cut.dcm"):
        load_medical_image(cut)
    no_pixels = write_dicom(tmp_path / "header_only.dcm", STORED, with_pixels=False)
    with pytest.raises(ValueError, match="header_only.dcm.*[Pp]ixel [Dd]ata"):
        load_medical_image(no_pixels)
    with pytest.raises(FileNotFoundError, match="absent.dcm"):
        load_medical_image(tmp_path / "absent.dcm")


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.dcm").write_bytes(b"\0" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(ImportError, match=r'a.dcm needs pydicom: pip install -e "\.\[medical\]"'):
        load_medical_image(tmp_path / "a.dcm")


@needs_pydicom
@needs_samples
@pytest.mark.parametrize("name, size", [("CT_small.dcm", (128, 128)), ("MR_small.dcm", (64, 64))])
def test_real_dicom_samples(tmp_path, name, size):
    out = load_medical_image(SAMPLES / name)
    assert out.mode == "L" and out.size == size
    low, high = out.getextrema()
    assert high - low > 100  # windowed or stretched, not a flat or near-black image
    cut = tmp_path / name
    cut.write_bytes((SAMPLES / name).read_bytes()[: (SAMPLES / name).stat().st_size // 2])
    with pytest.raises(ValueError, match=f"cannot read DICOM file .*{name}"):
        load_medical_image(cut)
