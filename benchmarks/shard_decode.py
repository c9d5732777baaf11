"""CPU decoding throughput of one data-loading worker: webdataset shards versus an image folder.

Makes its own data: ``--images`` JPEGs at ImageNet-like sizes (longer side 333-500 px, quality 90),
cut from a real photo (matplotlib's sample ``grace_hopper.jpg``: random crops, aspect ratios, flips,
colour shifts, mild grain) or, where that file is missing, from PIL-generated content (gradients, noise,
shapes). It writes them as an image folder and, with ``dinolite shards``' writer, as shards, then
times one process with one torch thread (what one DataLoader worker does):

- folder: ``ImageFolder.__getitems__`` (open each file, decode, bound to ``--decode-size``, pad);
- shards, train stream: ``ShardLoader`` (read tar, shuffle buffer, decode, bound, pad);
- shards, eval order: ``ShardSet.eval_batches`` (read tar in order, decode, bound, pad);
- shards, read only: the tar reading without decoding (the I/O share of the above).

Each is run ``--repeats`` times after a warm-up pass (page cache warm); the best run is reported,
since the machine may be shared. Usage::

    python3 benchmarks/shard_decode.py [--images 300] [--json benchmarks/results/shard_decode.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageEnhance

from dinolite.data.folder import ImageFolder
from dinolite.data.shard_read import read_shard
from dinolite.data.shard_writer import folder_samples, write_shards
from dinolite.data.shards import ShardLoader, ShardSet



def find_photo() -> Path | None:
    """matplotlib's sample photo (512 x 600 JPEG), when matplotlib is installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return path if path.is_file() else None


def _synthetic(rng: random.Random, w: int, h: int) -> Image.Image:
    im = Image.radial_gradient("L").resize((w, h)).convert("RGB")
    im = Image.merge("RGB", [c.point(lambda v, k=rng.random(): int(v * k)) for c in im.split()])
    noise = Image.effect_noise((w, h), rng.uniform(20, 60)).convert("RGB")
    im = Image.blend(im, noise, 0.3)
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x, y = rng.randrange(w), rng.randrange(h)
        draw.ellipse((x, y, x + rng.randrange(20, 150), y + rng.randrange(20, 150)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    return im


def make_images(folder: Path, n: int, seed: int = 0) -> str:
    """``n`` JPEGs in ``folder/<class>/``; returns a description of their origin."""
    rng = random.Random(seed)
    path = find_photo()
    photo = Image.open(path).convert("RGB") if path is not None else None
    for i in range(n):
        long_side, aspect = rng.randint(333, 500), rng.uniform(0.6, 1.0)
        w, h = (long_side, int(long_side * aspect)) if rng.random() < 0.6 else (int(long_side * aspect), long_side)
        if photo is not None:
            cw, ch = int(photo.width * rng.uniform(0.5, 1.0)), int(photo.height * rng.uniform(0.5, 1.0))
            x, y = rng.randrange(photo.width - cw + 1), rng.randrange(photo.height - ch + 1)
            im = photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
            im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5))
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            # grain: upscaled crops are smoother than camera images; grain adds back texture for the
            # JPEG coder (files come out near 56 KiB; ImageNet's average is about 110 KiB)
            im = Image.blend(im, Image.effect_noise((w, h), 64).convert("RGB"), 0.12)
        else:
            im = _synthetic(rng, w, h)
        cls = folder / f"class{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        im.save(cls / f"img{i:05d}.jpg", quality=90)
    return f"crops of the real photo {path.name}" if photo is not None else "PIL-generated content"


def best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up: page cache, lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--decode-size", type=int, default=256, help="data.decode_size (longer side bound)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-count", type=int, default=100, help="samples per shard")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "shard_decode.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "folder", Path(tmp) / "shards"
        origin = make_images(folder, args.images)
        manifest = write_shards(folder_samples(str(folder), 0), out, "bench", args.max_count, 10**9)
        n = manifest["total"]
        nbytes = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
        src = ImageFolder(str(folder), size=args.decode_size)
        shards = ShardSet(str(out), args.decode_size, shuffle_buffer=256)
        loader = ShardLoader(shards, args.batch, seed=0)
        steps = loader.steps_per_epoch
        idx = list(range(n))

        def folder_pass():
            for i in range(0, n, args.batch):
                src.__getitems__(idx[i:i + args.batch])

        def train_pass():
            for _ in loader.epoch(0):
                pass

        def eval_pass():
            for _ in shards.eval_batches(args.batch):
                pass

        def read_pass():
            for info in shards.infos:
                for _ in read_shard(info.path):
                    pass

        rows = [
            ("image folder (decode + bound + pad)", best_rate(folder_pass, n, args.repeats)),
            ("shards, train stream (read + shuffle + decode + bound + pad)",
             best_rate(train_pass, steps * args.batch, args.repeats)),
            ("shards, eval order (read + decode + bound + pad)", best_rate(eval_pass, n, args.repeats)),
            ("shards, read only (no decode)", best_rate(read_pass, n, args.repeats)),
        ]

    width = max(len(r[0]) for r in rows)
    print(f"{n} JPEGs ({origin}), {nbytes / n / 1024:.0f} KiB each on average, longer side 333-500 px, "
          f"bounded to {args.decode_size}; one process, one torch thread; best of {args.repeats}")
    print(f"{'path':<{width}}  samples/s per worker")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:10.1f}")
    result = {
        "images": n, "origin": origin, "mean_bytes": nbytes / n, "decode_size": args.decode_size,
        "batch": args.batch, "samples_per_shard": args.max_count, "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "samples_per_s": {name: rate for name, rate in rows},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
