"""ImageNet-like test pictures for the benchmarks: crops of a real photo, or PIL-made content.

Both data benchmarks need JPEGs whose size and texture resemble ImageNet's (longer side 333-500 px,
a few tens of KiB at quality 90); this module is the one place that makes them.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance


def load_photo() -> Image.Image | None:
    """matplotlib's sample photo (512 x 600 JPEG, ``grace_hopper.jpg``), when matplotlib is installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return Image.open(path).convert("RGB") if path.is_file() else None


def random_size(rng: random.Random, lo: int = 333, hi: int = 500) -> tuple[int, int]:
    """``(w, h)``: longer side uniform in ``[lo, hi]``, aspect 0.6-1, landscape 60 % of the time."""
    long_side, aspect = rng.randint(lo, hi), rng.uniform(0.6, 1.0)
    short = max(1, int(long_side * aspect))
    return (long_side, short) if rng.random() < 0.6 else (short, long_side)


def synthetic_picture(rng: random.Random, w: int, h: int, photo: Image.Image | None, grain: float = 0.12) -> Image.Image:
    """A random crop of ``photo`` (resized, colour-shifted, maybe flipped) with grain, or shapes on noise.

    Upscaled crops are smoother than camera images; the grain gives the JPEG coder texture back
    (files come out near 56-60 KiB at quality 90; ImageNet's average is about 110 KiB).
    """
    if photo is None:
        im = Image.radial_gradient("L").resize((w, h)).convert("RGB")
        im = Image.merge("RGB", [c.point(lambda v, k=rng.random(): int(v * k)) for c in im.split()])
        im = Image.blend(im, Image.effect_noise((w, h), rng.uniform(20, 60)).convert("RGB"), 0.3)
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.ellipse((x, y, x + rng.randrange(20, 150), y + rng.randrange(20, 150)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        return im
    cw, ch = int(photo.width * rng.uniform(0.5, 1.0)), int(photo.height * rng.uniform(0.5, 1.0))
    x, y = rng.randrange(photo.width - cw + 1), rng.randrange(photo.height - ch + 1)
    im = photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return Image.blend(im, Image.effect_noise((w, h), 64).convert("RGB"), grain)
