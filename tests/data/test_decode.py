"""Images decode to what they show, and bad files are skipped, counted and listed (files made in the test)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dinolite.data import BatchLoader
from dinolite.data.folder import ImageFolder, decode_bounded, read_bad_log


def _grey(t: torch.Tensor) -> float:
    return t.float().mean().item()


def test_16_bit_png_is_scaled_by_its_range(tmp_path):
    arr = np.full((20, 30), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    arr[:, :10] = 0
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = decode_bounded(tmp_path / "a.png", 64, "L")
    assert img.shape == (1, 20, 30)
    assert img[0, :, :10].max() == 0 and abs(int(img[0, 0, 20]) - 128) <= 1  # not clipped to white


def test_float_tiff_is_scaled_by_its_range(tmp_path):
    arr = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    img = decode_bounded(tmp_path / "f.tif", 64, "RGB")
    assert img.shape == (3, 16, 16)
    assert img[:, 0, 0].tolist() == [0, 0, 0] and img[:, -1, -1].tolist() == [255, 255, 255]
    assert 120 < _grey(img) < 135  # the ramp, not all black
    wide = np.linspace(-50, 150, 64, dtype=np.float32).reshape(8, 8)  # outside [0, 1]: its own min and max
    Image.fromarray(wide, mode="F").save(tmp_path / "w.tif")
    img = decode_bounded(tmp_path / "w.tif", 64, "L")
    assert img.min() == 0 and img.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 40, 3), dtype=np.uint8)
    arr[:, :5] = 255  # a white band on the left of a wide picture
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the viewer shows it tall, the band at the top
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = decode_bounded(tmp_path / "r.jpg", 64)
    assert img.shape == (3, 40, 10)
    assert _grey(img[:, :5]) > 200 and _grey(img[:, -20:]) < 30


def test_alpha_and_palette_images_are_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red on the left, fully transparent (black) on the right
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = decode_bounded(tmp_path / "a.png", 64)
    assert img[:, 0, 0].tolist() == [255, 0, 0] and img[:, 0, 7].tolist() == [255, 255, 255]
    pal = Image.fromarray(rgba, mode="RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = pal.getpixel((7, 0))
    pal.save(tmp_path / "p.png", transparency=pal.getpixel((7, 0)))
    img = decode_bounded(tmp_path / "p.png", 64)
    assert img[:, 0, 7].tolist() == [255, 255, 255] and img[0, 0, 0] > 200 and img[1, 0, 0] < 60
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 0, 0  # black, fully transparent
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert decode_bounded(tmp_path / "la.png", 64, "L").min() == 255


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # red in CMYK
    img = decode_bounded(tmp_path / "c.jpg", 64)
    assert img[0].float().mean() > 200 and img[1].float().mean() < 60 and img[2].float().mean() < 60


def _broken_files(folder):
    """One of each kind of bad file; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(good, format="JPEG")
    bad = {
        "zero.jpg": b"",
        "garbage.png": b"not an image at all" * 10,
        "truncated.jpg": good.getvalue()[:200],
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return [folder / n for n in bad]


def test_bad_files_are_skipped_counted_and_listed_with_workers(tmp_path):
    root = tmp_path / "data"
    for i in range(12):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (20 * i, 10, 10)).save(root / f"c{i % 2}" / f"ok{i}.png")
    broken = _broken_files(root / "c0")
    src = ImageFolder(str(root), size=16)
    src.bad_log = tmp_path / "bad_samples.txt"
    loader = BatchLoader(src, batch_size=5, seed=0, num_workers=2)
    batches = list(loader.epoch(0))
    assert len(batches) == 3 and all(images.shape == (5, 3, 16, 16) for images, _, _ in batches)  # full batches
    listed = read_bad_log(src.bad_log)
    assert set(listed) == {str(p) for p in broken} and loader.skipped_samples() == 3
    assert all(reason for reason in listed.values())


def test_decompression_bomb_is_a_bad_file_not_a_traceback(tmp_path, monkeypatch):
    root = tmp_path / "data" / "c"
    root.mkdir(parents=True)
    Image.new("L", (40, 40)).save(root / "big.png")
    Image.new("L", (8, 8), 100).save(root / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # 1,600 pixels is then over twice the limit
    src = ImageFolder(str(tmp_path / "data"), size=16)
    with pytest.warns(UserWarning, match="DecompressionBombError"):
        images, hw, _ = src.__getitems__([0])
    assert hw[0].tolist() == [8, 8]  # the next good image took its place
