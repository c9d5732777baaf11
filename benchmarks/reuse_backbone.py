"""Continuing from a backbone alone (no heads), measured: the head warm-up of ``dinolite.reuse`` against a naive
continuation (fresh heads, the usual LR, no freeze, no teacher copy, no re-centering), the full checkpoint (heads
and center kept) and from scratch, on data the source was not trained on, two at a time, each a real
``dinolite pretrain`` with a wall-clock budget and one CPU thread. Prints one JSON line per run and writes JSON.

    python benchmarks/reuse_backbone.py SOURCE --full RUN [--minutes 5] [--datasets animal-shape digits]

SOURCE is any backbone-only layout (a DINOv2 .pth, a Hugging Face folder, timm weights, a dinolite export), RUN the
dinolite run it came from. The datasets are one-channel idx files (learning_data.py).
What matters is the online k-NN right after the start: a naive continuation loses in its first steps what the
backbone knew (dinov2 issue 204); the warm-up should not. Each run records its source k-NN (``dinolite knn`` on the
same data before training), the online k-NN at every ``--online-every`` steps, its lowest, and the final k-NN.
``--tiny`` runs a seconds-long version on 128 images (the benchmark's own check).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NAIVE = ["model.init_head_warmup=0", "model.init_backbone_lr=1", "model.init_layer_decay=1",
         "model.init_teacher_copy=false", "model.init_recenter=false"]
TINY = ["data.subset=128", "data.test_subset=64", "optim.batch_size=32", "augment.local_crops_number=2",
        "eval.online_bank=128", "eval.online_queries=64", "train.log_every=2", "eval.knn_random_init=false"]


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dinolite.cli", *args], capture_output=True, text=True, env=env)


def source_knn(source: str, data: list[str], tiny: bool, env: dict) -> float | None:
    """The source backbone's k-NN on the same data (the quickstart's protocol), before any training."""
    from dinolite.config import load_config

    items = [item for item in data if item.startswith(("data.", "augment.", "eval."))]
    cfg = load_config("quickstart", items)  # what pretrain reads: the quickstart's data with these overrides
    items = [f"data.source={cfg.data.source}", f"augment.mean={list(cfg.augment.mean)}",
             f"augment.std={list(cfg.augment.std)}", f"eval.image_size={cfg.eval.image_size}",
             f"eval.crop_ratio={cfg.eval.crop_ratio}", *items]
    if tiny:
        items += ["data.subset=128", "data.test_subset=64"]
    proc = cli(["knn", source, "--no-progress", "--data", *items], env)
    rows = [line.split() for line in proc.stdout.splitlines()]
    found = [float(row[1]) for row in rows if len(row) == 3 and row[0] == "20"]  # k = 20: top-1, as pretrain's
    return found[0] if proc.returncode == 0 and found else None


def one_run(name: str, args: list[str], out: Path, minutes: float, env: dict) -> dict:
    run_dir = out / name
    cmd = ["pretrain", "--no-progress", f"train.output_dir={run_dir}", f"train.budget_minutes={minutes:g}",
           "train.threads=1", *args]
    t0 = time.time()
    proc = cli(cmd, env)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return {"run": name, "error": lines[-1:], "command": ["dinolite", *cmd]}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    online = [(r["step"], r["knn_online"]) for r in rows if "knn_online" in r]
    final = {k: v for r in rows for k, v in r.items() if k.startswith("knn_top1")}
    banner = [line for line in lines if line.startswith("continuing from")]
    return {"run": name, "command": ["dinolite", *cmd], "wall_s": round(time.time() - t0, 1),
            "steps": max((r["step"] for r in rows if "loss" in r), default=0), "online_knn": online,
            "lowest_online_knn": min((k for _, k in online), default=None), "final": final,
            "banner": banner[:1]}


def dataset_overrides(name: str, out: Path) -> list[str]:
    """One-channel idx files in Fashion-MNIST's layout, so a one-channel source continues on them as it is."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from learning_data import animal_shape_idx, digits_idx

    if name == "animal-shape":
        return [f"data.root={animal_shape_idx(out / 'data' / 'animal_shape_idx')}", "augment.mean=[0.273]",
                "augment.std=[0.406]"]
    if name == "digits":  # 1,297 training images: log and score often enough for a curve
        root, stats = digits_idx(out / "data" / "digits_idx")
        return [f"data.root={root}", f"augment.mean=[{stats['mean']}]", f"augment.std=[{stats['std']}]"]
    raise SystemExit(f"unknown dataset {name!r}: animal-shape or digits")


def variants(source: str, full: str | None) -> list[tuple[str, list[str]]]:
    """The runs compared on each dataset: the backbone-only continuation with dinolite's head warm-up, the same
    source continued naively, the full checkpoint (heads and center kept) and from scratch."""
    runs = [("backbone-warmup", [f"model.init={source}"]), ("backbone-naive", [f"model.init={source}", *NAIVE])]
    if full:
        runs.append(("full-checkpoint", [f"model.init={full}"]))
    return runs + [("scratch", [])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a backbone-only file or folder")
    p.add_argument("--full", help="the run (or checkpoint) the source was exported from: the full-checkpoint row")
    p.add_argument("--datasets", nargs="*", default=["animal-shape", "digits"])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--online-every", type=int, default=20)
    p.add_argument("--set", nargs="*", default=[], help="overrides for every run (e.g. optim.batch_size=64)")
    p.add_argument("--out", default="runs/reuse-backbone")
    p.add_argument("--json", default="benchmarks/results/reuse_backbone.json")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    out, env = Path(args.out), {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for dataset in args.datasets:
        data = dataset_overrides(dataset, out)
        common = [*data, f"eval.online_every={args.online_every}", *(TINY if args.tiny else []), *args.set]
        before = source_knn(args.source, data, args.tiny, env)
        runs = [(f"{dataset}/{name}", [*common, *extra]) for name, extra in variants(args.source, args.full)]
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda r: one_run(r[0], r[1], out, args.minutes, env), runs))
        for r in done:
            r.update(dataset=dataset, source_knn=before)
            print(json.dumps(r), flush=True)
        results += done
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provenance import provenance

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": args.source, "full": args.full, "minutes": args.minutes,
                                "threads_per_run": 1, "tiny": args.tiny, "results": results,
                                "provenance": provenance(recipe="configs/quickstart.yaml",
                                                         steps_per_s={r["run"]: r.get("steps", 0) / (args.minutes * 60)
                                                                      for r in results})}, indent=1) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
