"""``dinolite pretrain``: train (or resume) a run from a recipe plus key=value overrides."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from .. import STARTED
    from ..config import load_command_config
    from ..distributed import read_rendezvous
    from ..pretraining.train import pretrain

    # What the user typed wins: a typed optim.epochs / optim.total_steps replaces the recipe's time budget
    # (both typed is one line, exit 2, before anything is written); the banner says which length runs.
    cfg, note = load_command_config(args.config, args.overrides)
    if note and read_rendezvous().rank == 0:
        print(note, flush=True)
    pretrain(cfg, progress=not args.no_progress, started=STARTED)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain (or resume) a run; default recipe: quickstart",
                       description="Pretrain with a recipe from configs/ plus key=value overrides. "
                                   "A run directory that holds checkpoints is resumed. A run length typed here "
                                   "(optim.epochs, optim.total_steps) replaces the recipe's train.budget_minutes.")
    p.add_argument("--config", default=None, help="recipe name (quickstart, vit_small_imagenet) or YAML path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (metric lines still written)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.epochs=5 train.output_dir=runs/x")
    p.set_defaults(func=run)
