"""``dinolite plot``: PNG curves of a run's metrics (loss, lr, teacher entropy, k-NN when present)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..config import read_saved_config
    from ..viz.curves import plot_run

    saved = Path(args.run_dir) / "config.yaml"
    out_dim = read_saved_config(saved).model.out_dim if saved.is_file() else None
    out = plot_run(args.run_dir, args.out, out_dim)
    print(f"curves written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="PNG curves of a run's metrics.jsonl")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pretraining run directory (reads its metrics.jsonl)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run)
