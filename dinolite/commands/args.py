"""Arguments the evaluation commands share. Only argparse here: ``dinolite --help`` builds every parser,
and must not wait for torch (the heavy parts of a command are imported when it runs)."""

from __future__ import annotations

import argparse


def add_target_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("target", metavar="RUN_OR_CHECKPOINT",
                   help="run directory, checkpoint (.pt/.pth, dinolite or official DINO), export directory or "
                        ".safetensors")
    p.add_argument("--checkpoint-key", default="teacher", choices=["teacher", "student"],
                   help="which network of a training checkpoint (default: teacher)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (auto: cuda when present)")
    p.add_argument("--pos-interp", default="auto", choices=["auto", "dino", "timm"],
                   help="position embeddings at another image size: dino (the reference code's bicubic scale-factor "
                        "interpolation), timm (timm's resampling); auto: dino for official DINO checkpoints, else timm")
    if data:
        p.add_argument("--data", nargs="+", default=[], metavar="ITEM",
                       help="data/eval settings on top of the run's: e.g. root=/data/imagenet source=folder "
                            "eval.image_size=224 (bare keys are data.* keys), or fashion_mnist[:ROOT], a shard "
                            "directory, an image folder root")
        p.add_argument("--cache-dir", default=None,
                       help="feature cache folder (default: <run or checkpoint folder>/features)")
        p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
