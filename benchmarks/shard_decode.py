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
import sys
import tempfile
import time
from pathlib import Path

import torch

from dinolite.data.folder import ImageFolder
from dinolite.data.shard_read import read_shard
from dinolite.data.shard_writer import folder_samples, write_shards
from dinolite.data.shards import ShardLoader, ShardSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_images import load_photo, random_size, synthetic_picture  # noqa: E402


def make_images(folder: Path, n: int, seed: int = 0) -> str:
    """``n`` JPEGs in ``folder/<class>/``; returns a description of their origin."""
    rng = random.Random(seed)
    photo = load_photo()
    for i in range(n):
        w, h = random_size(rng)
        cls = folder / f"class{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        synthetic_picture(rng, w, h, photo).save(cls / f"img{i:05d}.jpg", quality=90)
    return "crops of the real photo grace_hopper.jpg" if photo is not None else "PIL-generated content"


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
