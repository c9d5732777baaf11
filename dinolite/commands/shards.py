"""``dinolite shards``: write an image folder or Fashion-MNIST as webdataset tar shards plus a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

FMNIST = "fashion_mnist"


def parse_source(source: str, split: str, subset: int):
    """``fashion_mnist`` / ``fashion_mnist:ROOT`` (idx files; ``--split``), or an image folder path."""
    from ..data import shard_writer as w
    from ..data.fashion_mnist import DEFAULT_ROOT

    name, _, root = source.partition(":")
    if name in (FMNIST, "fashion-mnist"):
        return w.fashion_mnist_samples(root or DEFAULT_ROOT, split, subset)
    if not Path(source).is_dir():
        raise UserError(f"SOURCE {source!r} is neither an image folder (<class>/<images>) nor "
                        f"'{FMNIST}[:ROOT]': pass e.g. /data/imagenet/train or {FMNIST}:{DEFAULT_ROOT}")
    return w.folder_samples(source, subset)


def verify(directory: str, progress: bool) -> int:
    """Exit 0 when every shard holds what the manifest lists and every image decodes, else 1."""
    from ..data.shard_verify import verify_shards

    reports = verify_shards(directory, progress)
    for r in reports:
        if not r.ok:
            what = "file missing" if r.missing_file else \
                f"{r.found} samples of {r.listed} listed, {r.undecodable} undecodable"
            print(f"{r.name}: {what}", flush=True)
    listed, found = sum(r.listed for r in reports), sum(r.found for r in reports)
    bad = sum(r.undecodable for r in reports)
    wrong = [r for r in reports if not r.ok]
    verdict = "all as listed" if not wrong else f"{len(wrong)} shard(s) differ from the manifest"
    print(f"{len(reports)} shards: {found} samples read of {listed} listed, {bad} undecodable; {verdict}", flush=True)
    return 0 if not wrong else 1


def run(args: argparse.Namespace) -> int:
    from ..data.shard_writer import write_shards

    if args.verify:
        return verify(args.verify, not args.no_progress)
    if not args.source or not args.out:
        raise UserError("dinolite shards needs SOURCE and --out to write shards, or --verify DIR to check them")
    is_fmnist = args.source.partition(":")[0] in (FMNIST, "fashion-mnist")
    prefix = args.prefix or (args.split if is_fmnist else Path(args.source).resolve().name)
    samples = parse_source(args.source, args.split, args.subset)
    manifest = write_shards(samples, Path(args.out), prefix, args.max_count, int(args.max_size),
                            progress=not args.no_progress, total=getattr(samples, "total", None))
    print(f"wrote {manifest['total']} samples in {len(manifest['shards'])} shards "
          f"({prefix}-{0:06d}.tar ...) and {Path(args.out) / 'manifest.json'}", flush=True)
    if samples.left_out:
        print(f"left out {len(samples.left_out)} unreadable files, e.g. {samples.left_out[0]}", flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("shards", help="write webdataset tar shards (and a manifest) from images",
                       description="Write SOURCE as webdataset tar shards <prefix>-NNNNNN.tar plus manifest.json "
                                   "in --out. SOURCE: an image folder (<class>/<images>, bytes kept as they are) "
                                   "or fashion_mnist[:ROOT] (idx files, stored as PNG; pick the split with --split).")
    p.add_argument("source", metavar="SOURCE", nargs="?", help="image folder, or fashion_mnist[:ROOT]")
    p.add_argument("--out", help="output directory (must not already hold shards)")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="instead of writing: read every shard in DIR, count and decode its samples, compare with "
                        "its manifest (exit 1 when they differ)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (writing or verifying)")
    p.add_argument("--max-count", type=int, default=10000, help="samples per shard at most (default 10000)")
    p.add_argument("--max-size", type=float, default=1e9, help="bytes per shard at most (default 1e9)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="Fashion-MNIST split (default train)")
    p.add_argument("--subset", type=int, default=0, help="write only the first N images (0 = all)")
    p.add_argument("--prefix", default="", help="shard name prefix (default: the split, or the folder's name)")
    p.set_defaults(func=run)
