"""Does the quickstart recipe learn on data it was not tuned on? One recipe, a fixed number of images
seen, several real datasets; for each, the teacher's k-NN beside the same network at random
initialisation and beside raw pixels, the teacher's final entropy and KL to uniform, the monitor's
warnings, wall time and steps/s. Prints a markdown table and writes JSON.

    pip install --no-deps animal-shape-mnist            # once: the second real dataset (see learning_data.py)
    python benchmarks/learning.py [--images 122880] [--parallel 2] [--json benchmarks/results/learning.json]

Each run is ``dinolite pretrain`` (the quickstart recipe, its time budget replaced by a fixed step
count, so every dataset sees the same number of images) in its own process. ``--parallel 2`` runs two
at a time with one thread each (on 2 cores that is faster in all than one at a time with two);
steps/s are then per run, not comparable with a run alone. ``--set`` adds ``key=value`` overrides to
every run (to compare recipes); ``--only`` picks datasets by name.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_data import animal_shape_folder  # noqa: E402

FMNIST = ["data.source=fashion_mnist", "data.root=/usr/share/datasets/fashion-mnist"]


def datasets(data_dir: Path) -> dict[str, list[str]]:
    """Name -> data overrides. Fashion-MNIST subsets are its first N training images; queries are
    always the whole test split of the dataset."""
    out = {"fashion-mnist": FMNIST}
    for n in (5000, 10000, 20000):
        out[f"fashion-mnist-{n // 1000}k"] = FMNIST + [f"data.subset={n}"]
    out["animal-shape"] = ["data.source=folder", f"data.root={data_dir / 'animal_shape'}", "data.train_dir=train",
                           "data.val_dir=test", "data.num_workers=0", "data.decode_size=28",
                           # the folder source decodes to RGB: the dataset's own pixel statistics, per channel
                           "augment.mean=[0.273,0.273,0.273]", "augment.std=[0.406,0.406,0.406]"]
    return out


def one_run(name: str, data: list[str], args, out_dir: Path) -> dict:
    run_dir = out_dir / name
    steps = args.images // args.batch
    cmd = [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", *data,
           f"train.output_dir={run_dir}", "train.budget_minutes=0", f"optim.total_steps={steps}",
           f"optim.batch_size={args.batch}", "eval.knn_pixels=true", "eval.knn_random_init=true",
           f"train.threads={args.threads}", *args.set]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        return {"dataset": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    final = [r for r in rows if "knn_top1" in r][-1]
    base = json.loads((run_dir / "baselines.json").read_text())["values"]
    warnings = [w for r in train for w in r.get("warnings", [])]
    # training time alone (no baselines, online k-NN or checkpoints): each log interval's steps at its images/s
    train_s = sum((r["step"] - p["step"]) * args.batch / r["images_per_s"] for p, r in zip([{"step": 0}] + train, train))
    online = [(r["step"], round(r["knn_online"], 2)) for r in train if "knn_online" in r]
    return {
        "dataset": name, "steps": steps, "images_seen": steps * args.batch,
        "teacher_knn": final["knn_top1"], "random_init_knn": base["knn_top1_random_init"],
        "pixels_knn": base["knn_top1_pixels"], "margin_over_random": final["knn_top1"] - base["knn_top1_random_init"],
        "final_entropy": train[-1]["teacher_entropy"], "final_kl_uniform": train[-1]["kl_uniform"],
        "max_entropy": math.log(int(_cfg(run_dir)["model"]["out_dim"])),
        "collapse_warnings": warnings, "online_knn": online,
        "wall_s": round(wall, 1), "train_s": round(train_s, 1), "steps_per_s": round(steps / train_s, 3),
    }


def _cfg(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))


def table(results: list[dict]) -> str:
    lines = ["| dataset | teacher k-NN | random init | raw pixels | teacher - random | final H / log K | final KL | warnings | wall | steps/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | error: {r['error']} |||||||||")
            continue
        warn = "; ".join(w.split(":")[0] for w in r["collapse_warnings"]) or "none"
        lines.append(f"| {r['dataset']} | {r['teacher_knn']:.2f} % | {r['random_init_knn']:.2f} % | {r['pixels_knn']:.2f} % "
                     f"| {r['margin_over_random']:+.2f} | {r['final_entropy']:.2f} / {r['max_entropy']:.2f} "
                     f"| {r['final_kl_uniform']:.2f} | {warn} | {r['wall_s']:.0f} s | {r['steps_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=122880, help="images seen by every run (steps x batch); 480 x 256: what the 10-minute budget gives on the slow machines")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: 1 when parallel, else default)")
    p.add_argument("--only", nargs="*", default=None, help="dataset names to run (default: all)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", default="runs/learning-benchmark", help="folder of the runs and the prepared data")
    p.add_argument("--json", default="benchmarks/results/learning.json")
    args = p.parse_args(argv)
    if not args.threads:
        args.threads = 1 if args.parallel > 1 else 0
    out = Path(args.out)
    animal_shape_folder(out / "data" / "animal_shape")
    chosen = {k: v for k, v in datasets(out / "data").items() if not args.only or k in args.only}
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda item: one_run(item[0], item[1], args, out), chosen.items()))
    path = Path(args.json)
    if args.only and path.is_file():  # a partial rerun replaces its datasets' rows, keeps the others
        kept = [r for r in json.loads(path.read_text())["results"] if r["dataset"] not in chosen]
        order = list(datasets(out / "data"))
        results = sorted(kept + results, key=lambda r: order.index(r["dataset"]) if r["dataset"] in order else 99)
    print(table(results))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"images": args.images, "batch": args.batch, "parallel": args.parallel,
                                           "threads": args.threads, "overrides": args.set,
                                           "tuned_on": "fashion-mnist (full) and fashion-mnist-10k",
                                           "results": results}, indent=1))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
