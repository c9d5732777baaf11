"""Images/s of ``dinolite embed`` against ``dinolite knn``'s feature extraction, same model and images.

Both calls are timed whole, as a user runs them: ``knn``'s ``setup`` + ``features`` (weights, source, features in
memory, no cache) and ``embed``'s ``run_embed`` (the same, plus hashing the weights and writing features.npy,
index.csv and embed.json through a temporary folder). The difference is what writing the files costs. The runs
alternate (knn, embed, knn, embed, ...) after one untimed warm-up of each, and the median of each is reported.
The machine's load average is written beside the figures: on a shared machine they are only comparable to each
other. Prints a table and writes JSON.

    dinolite pretrain optim.total_steps=20 train.budget_minutes=0 eval.knn_at_end=false train.output_dir=/tmp/qs
    python benchmarks/embed_throughput.py /tmp/qs [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dinolite.cli import parse
from dinolite.commands.common import features, setup
from dinolite.eval.embed import run_embed

RESULTS = Path(__file__).resolve().parent / "results"


def time_knn(target: str, data: list[str], split: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    feats, _, _ = features(setup(parse(["knn", target, "--no-cache", "--no-progress", "--data", *data])), split)
    return time.perf_counter() - t0, len(feats)


def time_embed(target: str, data: list[str], split: str, folder: Path) -> tuple[float, int]:
    out = folder / "emb"
    t0 = time.perf_counter()
    done = run_embed(target, data, out, split=split, progress=False)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds, done.count


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", help="a quickstart run directory or export")
    p.add_argument("--images", type=int, default=10000, help="the first N images of the split (data.subset)")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=str(RESULTS / "embed_throughput-cpu.json"))
    p.add_argument("--note", default="", help="what else ran on the machine, kept in the JSON")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    subset = "subset" if args.split == "train" else "test_subset"
    data = [f"{subset}={args.images}"]
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {"knn features": [], "embed": []}
    with tempfile.TemporaryDirectory() as tmp:
        small = [f"{subset}={min(args.images, 1000)}"]
        time_knn(args.target, small, args.split)  # warm-up: imports, allocator, first calls
        time_embed(args.target, small, args.split, Path(tmp))
        for _ in range(args.repeats):
            seconds, n_knn = time_knn(args.target, data, args.split)
            runs["knn features"].append(n_knn / seconds)
            seconds, n_embed = time_embed(args.target, data, args.split, Path(tmp))
            runs["embed"].append(n_embed / seconds)
            if n_knn != n_embed:
                raise RuntimeError(f"knn extracted {n_knn} images but embed wrote {n_embed}")
    load_after = os.getloadavg()
    knn_rate, embed_rate = (statistics.median(runs[k]) for k in ("knn features", "embed"))
    rows = {name: {"images_per_s_median": round(statistics.median(v), 1), "images_per_s": [round(x, 1) for x in v]}
            for name, v in runs.items()}
    result = {"target": args.target, "images": n_knn, "split": args.split, "device": "cpu",
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "repeats": args.repeats,
              "results": rows,
              "embed_over_knn": round(embed_rate / knn_rate, 3),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after],
              "quiet": max(load_before[0], load_after[0]) < 1.5, "note": args.note}
    print(f"{n_knn} images of the {args.split} split, cpu ({torch.get_num_threads()} threads), "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    for name, row in rows.items():
        print(f"{name:14s} {row['images_per_s_median']:9.1f} images/s  (runs: {row['images_per_s']})")
    print(f"embed / knn: {result['embed_over_knn']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.json}")
    return result


if __name__ == "__main__":
    main()
