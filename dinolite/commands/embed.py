"""``dinolite embed``: the features of every image of a split, as files numpy, torch and pandas read.

``features.npy`` (float32 [N, D]), ``index.csv`` (index, path or sample key, label) and ``embed.json`` in a new
folder; the rows are the features ``dinolite knn`` extracts for the same weights and data. Under torchrun each
process embeds its share. The work is in ``dinolite.eval.embed`` (also ``dinolite.embed`` in Python).
"""

from __future__ import annotations

import argparse

from .args import add_target_args


def run(args: argparse.Namespace) -> int:
    from ..eval.embed import FEATURES, INDEX, INFO, run_embed

    done = run_embed(args.target, args.data, args.out, split=args.split, checkpoint_key=args.checkpoint_key,
                     device=args.device, pos_interp=args.pos_interp, progress=not args.no_progress)
    if done.is_main:
        if done.up_to_date:
            print(f"{done.path} already holds this embedding ({done.count} x {done.dim}): nothing to do")
        else:
            print(f"embedded {done.count} images of the {args.split} split, {done.dim}-dim features: "
                  f"{done.path / FEATURES}, {done.path / INDEX}, {done.path / INFO}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="features of every image of a split, as .npy + .csv",
                       description="The backbone's features of every image of an image folder, shard set or "
                                   "Fashion-MNIST split (the evaluation view of 'dinolite knn'), written to "
                                   "OUT/features.npy (float32 [N, D]), OUT/index.csv (index,path,label) and "
                                   "OUT/embed.json. Split over the processes of a torchrun launch.")
    add_target_args(p, data=False)
    p.add_argument("--data", nargs="+", default=[], metavar="ITEM",
                   help="the images, as in 'dinolite knn': fashion_mnist[:ROOT], a shard directory, an image "
                        "folder root (its train/ or val/ sub-folder), or key=value items such as "
                        "root=/data/imagenet train_dir=. eval.image_size=224 (default: the run's own data)")
    p.add_argument("--out", required=True, help="a new or empty folder for the files")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="which split of the data (test: the folder's val/ sub-folder, data.eval_shards, the "
                        "Fashion-MNIST test set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
