"""Two commits side by side: the same ``dinolite pretrain`` command (the quickstart recipe for a fixed number of
steps, the start's evaluations as in the README's run) from a checkout of each commit, alternating, so a change
that should not cost speed is shown not to (or what it gained).

    python benchmarks/commits.py --old 5d13268 --new HEAD [--steps 200] [--repeat 2]

Each commit is checked out once with ``git worktree add --detach`` in a temporary folder and run from there
(``PYTHONPATH`` = that checkout, so its own ``dinolite`` and ``configs/`` are the ones run). A run's images/s is
read per log interval from its metrics.jsonl (training alone); the result is the mean over intervals and pairs.
Run it with nothing else on the machine. Prints a table and writes JSON with provenance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance, write_result  # noqa: E402
from run_record import read_metrics  # noqa: E402

RECIPE = "configs/quickstart.yaml"
ROOT = Path(__file__).resolve().parents[1]


def checkout(ref: str, where: Path) -> tuple[Path, str]:
    """A detached worktree of ``ref`` at ``where``; returns it and the full commit hash."""
    sha = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "worktree", "add", "--detach", str(where), sha], cwd=ROOT, capture_output=True, check=True)
    return where, sha


def one(tree: Path, steps: int, extra: list[str], run: Path) -> dict:
    cmd = [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", "--config", RECIPE,
           "train.budget_minutes=0", f"optim.total_steps={steps}", "eval.knn_at_end=false",
           f"train.output_dir={run}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"commits: the run of {tree} failed: {proc.stderr.strip().splitlines()[-1:]}")
    ips = [round(r["images_per_s"], 1) for r in read_metrics(run) if "images_per_s" in r]
    return {"images_per_s": ips, "mean_images_per_s": round(sum(ips) / len(ips), 1), "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="the commit before the change (any git ref)")
    p.add_argument("--new", default="HEAD", help="the commit after it (default HEAD)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeat", type=int, default=2, help="pairs of runs (old, new), alternating")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for both runs")
    p.add_argument("--precision", default="fp32",
                   help="train.precision of both runs; 'recipe': not set, each commit's recipe decides (a commit from "
                        "before train.precision existed runs float32)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/commits.json"))
    args = p.parse_args(argv)
    overrides = args.set if args.precision == "recipe" else [f"train.precision={args.precision}", *args.set]
    rows = []
    with tempfile.TemporaryDirectory(prefix="commits-") as tmp:
        trees = {"old": checkout(args.old, Path(tmp) / "old"), "new": checkout(args.new, Path(tmp) / "new")}
        try:
            for i in range(args.repeat):
                for side, (tree, sha) in trees.items():
                    r = {"pair": i, "side": side, "commit": sha, **one(tree, args.steps, overrides,
                                                                         Path(tmp) / "runs" / f"{side}{i}")}
                    rows.append(r)
                    print(f"{side} {sha[:8]}: {r['mean_images_per_s']} images/s, {r['wall_s']} s", flush=True)
        finally:
            for tree, _ in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    from dinolite.config import load_config

    batch = load_config(RECIPE, args.set).optim.batch_size
    mean = {s: round(sum(r["mean_images_per_s"] for r in rows if r["side"] == s) / args.repeat, 1)
            for s in ("old", "new")}
    ratio = round(mean["new"] / mean["old"], 3)
    print(f"new/old: {ratio:.3f}x ({mean['old']} -> {mean['new']} images/s, batch {batch})")
    record = {"old": trees["old"][1], "new": trees["new"][1], "steps": args.steps, "overrides": overrides, "rows": rows,
              "mean_images_per_s": mean, "new_over_old": ratio,
              "provenance": provenance(recipe=RECIPE, steps_per_s={s: round(v / batch, 3) for s, v in mean.items()})}
    write_result(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
