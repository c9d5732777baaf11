"""What glibc's allocator costs a training step: the quickstart through ``dinolite pretrain`` for a fixed number of
steps, with the start's evaluations (random init, raw pixels, online k-NN) as in the README's run, once with glibc's
defaults (``DINOLITE_MALLOC=default``) and once as dinolite sets it (engine/allocator.py), one after the other.

    python benchmarks/allocator.py [--steps 200] [--repeat 1]

Each run's images/s per log interval (training alone, from metrics.jsonl), its mean, and the process's minor page
faults and peak memory (from ``getrusage`` of the child). Run it with nothing else on the machine. Prints a table
and writes JSON with the provenance of ``provenance.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance, write_result  # noqa: E402
from run_record import read_metrics  # noqa: E402

RECIPE = "configs/quickstart.yaml"


def one(mode: str, steps: int, extra: list[str], out: Path) -> dict:
    run = out / mode
    cmd = [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", "--config", RECIPE,
           "train.budget_minutes=0", f"optim.total_steps={steps}", "eval.knn_at_end=false", "train.precision=fp32",
           f"train.output_dir={run}", *extra]
    env = {**os.environ, "DINOLITE_MALLOC": mode}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"allocator: the {mode} run failed: {proc.stderr.strip().splitlines()[-1:]}")
    ips = [round(r["images_per_s"], 1) for r in read_metrics(run) if "images_per_s" in r]
    return {"malloc": mode, "images_per_s": ips, "mean_images_per_s": round(sum(ips) / len(ips), 1),
            "minor_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mb": round(after.ru_maxrss / 1024),
            "wall_s": round(wall, 1), "command": cmd}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeat", type=int, default=1, help="pairs of runs (default, tuned), alternating")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for both runs")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/allocator.json"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="allocator-") as tmp:
        for i in range(args.repeat):
            for mode in ("default", "dinolite"):
                rows.append({"pair": i, **one(mode, args.steps, args.set, Path(tmp) / str(i))})
                r = rows[-1]
                print(f"{r['malloc']:>8}: {r['mean_images_per_s']} images/s, {r['minor_faults']} minor faults, "
                      f"{r['peak_rss_mb']} MB peak, {r['wall_s']} s", flush=True)
    from dinolite.config import load_config

    batch = load_config(RECIPE, args.set).optim.batch_size  # images/s to steps/s
    mean = {m: round(sum(r["mean_images_per_s"] for r in rows if r["malloc"] == m) / args.repeat, 1)
            for m in ("default", "dinolite")}
    print(f"speed-up: {mean['dinolite'] / mean['default']:.2f}x ({mean['default']} -> {mean['dinolite']} images/s)")
    record = {"steps": args.steps, "rows": rows, "mean_images_per_s": mean,
              "speedup": round(mean["dinolite"] / mean["default"], 3),
              "provenance": provenance(recipe=RECIPE, steps_per_s={m: round(v / batch, 3) for m, v in mean.items()})}
    write_result(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
