"""build_transform and load_image."""

import io
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmtrans.data import build_transform, load_image
from mmtrans.data.transforms import per_channel

SHARED_DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
HYMENOPTERA = SHARED_DATA / "hymenoptera" / "hymenoptera_data"


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_shape_and_dtype(train, in_chans):
    tf = build_transform(32, train=train, mean=(0.5,), std=(0.5,), in_chans=in_chans, color_jitter=0.4)
    out = tf(Image.new("RGB", (50, 37), (200, 30, 90)))
    assert out.shape == (in_chans, 32, 32) and out.dtype == torch.float32


def test_eval_is_deterministic_and_normalises():
    tf = build_transform(16, train=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    img = Image.new("RGB", (40, 30), (255, 255, 255))
    assert torch.equal(tf(img), tf(img))
    assert torch.allclose(tf(img), torch.full((3, 16, 16), 2.0))  # (1 - 0.5) / 0.25


def test_grey_input_becomes_rgb_and_rgb_becomes_grey():
    rgb = build_transform(8, train=False, mean=(0.0,), std=(1.0,), in_chans=3)
    assert rgb(Image.new("L", (8, 8), 128)).shape == (3, 8, 8)
    grey = build_transform(8, train=False, mean=(0.0,), std=(1.0,), in_chans=1)
    assert grey(Image.new("RGB", (8, 8), (255, 0, 0))).shape == (1, 8, 8)


def test_statistics_broadcast():
    assert per_channel([0.5], 3, "mean") == [0.5, 0.5, 0.5]
    # RGB statistics for grey input use the same luma weights as PIL's "L" conversion.
    assert per_channel([1.0, 0.0, 0.0], 1, "mean") == pytest.approx([0.299])
    with pytest.raises(ValueError, match="mean has 2 values"):
        build_transform(8, train=True, mean=(0.5, 0.5), std=(0.5,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="interpolation"):
        build_transform(8, train=False, mean=(0.5,), std=(0.5,), interpolation="cubic-ish")
    with pytest.raises(ValueError, match="in_chans"):
        build_transform(8, train=False, mean=(0.5,), std=(0.5,), in_chans=4)


def test_transform_pickles_for_workers():
    tf = build_transform(8, train=True, mean=(0.5,), std=(0.5,), in_chans=1)
    assert pickle.loads(pickle.dumps(tf))(Image.new("RGB", (9, 9))).shape == (1, 8, 8)


def test_palette_gif_with_transparency_loads_as_rgb(tmp_path):
    path = tmp_path / "p.gif"
    img = Image.new("P", (6, 6), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(path, transparency=0)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (6, 6) and out.getpixel((0, 0)) == (255, 0, 0)
    assert load_image(path, mode="L").mode == "L"


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_draft_shrinks_big_jpegs(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1024, 768), (10, 200, 30)).save(path)
    assert load_image(path).size == (1024, 768)
    small = load_image(path, draft_size=180)
    assert min(small.size) >= 180 and small.size[0] < 1024 and small.mode == "RGB"


def test_unreadable_files_name_the_path(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*notes.png"):
        load_image(text)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(truncated)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"shared data not found at {HYMENOPTERA}")
def test_hymenoptera_palette_gif_loads_as_rgb():
    gifs = sorted(HYMENOPTERA.rglob("*.gif"))
    assert gifs, "the hymenoptera copy should hold a palette GIF"
    with Image.open(gifs[0]) as raw:
        assert raw.mode == "P"
    assert load_image(gifs[0]).mode == "RGB"
