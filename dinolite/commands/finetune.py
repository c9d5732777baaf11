"""``dinolite finetune``: supervised fine-tuning and its self-distillation variants on labelled data."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


class MethodNames:
    """The ``--method`` choices: the fine-tuning registry's names, read when argparse first needs them (a help
    page, a value to check), so that building the parser imports no torch."""

    @staticmethod
    def names() -> list[str]:
        from ..finetune.methods.registry import METHODS

        return list(METHODS)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def run(args: argparse.Namespace) -> int:
    from ..finetune.config import FinetuneConfig
    from ..finetune.methods import finetune
    from ..finetune.recipe import load_finetune_config
    from ..overrides import data_items

    overrides = data_items(args.data, FinetuneConfig) + list(args.overrides)
    if args.method:
        overrides.append(f"method={args.method}")
    if args.init:
        overrides.append(f"init={args.init}")
    finetune(load_finetune_config(args.config, overrides), progress=not args.no_progress)
    return 0


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune on labelled data: supervised, or with self-distillation (--method)",
                       description="Train backbone + classifier on labelled data from pretrained weights, with the "
                                   "supervised baseline or a form of self-distillation (--method); writes results.md "
                                   "and results.json into the run directory. Rerunning the same command resumes.")
    p.add_argument("--config", default=None, help="recipe name or YAML path (default: finetune_fmnist)")
    # metavar set: argparse would otherwise list the choices while building the parser
    p.add_argument("--method", choices=MethodNames(), metavar="METHOD", default=None,
                   help="%(choices)s (default: the recipe's, supervised)")
    p.add_argument("--init", default=None, metavar="RUN_OR_CHECKPOINT_OR_timm:NAME",
                   help="initial weights: run directory, checkpoint, export, .safetensors, or timm:NAME")
    p.add_argument("--data", nargs="+", default=[], metavar="ITEM",
                   help="key=value data settings (bare keys are data.* keys), or fashion_mnist[:ROOT], "
                        "a shard directory, an image folder root")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (metric lines still written)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.epochs=3 train.output_dir=runs/ft")
    p.set_defaults(func=run)
