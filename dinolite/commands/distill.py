"""``dinolite distill``: a frozen teacher trains one or several students (any timm ViT or CNN) on unlabelled
images, on the same engine as pretraining (lock, resume, time budget, online k-NN, loggers, processes)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from .. import STARTED
    from ..config import load_command_config
    from ..distributed import read_rendezvous
    from ..pretraining.train import pretrain

    overrides = list(args.overrides) + ([f"distill.teacher={args.teacher}"] if args.teacher else [])
    # a typed length replaces the recipe's budget, as for pretrain
    cfg, note = load_command_config(args.config, overrides, distill=True)
    if note and read_rendezvous().rank == 0:
        print(note, flush=True)
    pretrain(cfg, progress=not args.no_progress, started=STARTED)
    return 0


def register(sub) -> None:
    p = sub.add_parser("distill", help="distill a frozen teacher into one or several students; "
                                       "default recipe: distill_fmnist",
                       description="Train students of any timm architecture to match a frozen teacher (a dinolite "
                                   "run or export, an official DINO checkpoint, or timm weights) on unlabelled "
                                   "images. Each student is exported to <run>/students/<name>/ (timm local-dir "
                                   "layout). Rerunning the same command resumes.")
    p.add_argument("--config", default="distill_fmnist", help="recipe name or YAML path (default: distill_fmnist)")
    p.add_argument("--teacher", default=None, metavar="RUN_OR_CHECKPOINT",
                   help="the frozen teacher (sets distill.teacher): run directory, checkpoint, export or weights file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (metric lines still written)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. distill.objective=dino_head 'distill.students=[{arch: resnet10t}]'")
    p.set_defaults(func=run)
