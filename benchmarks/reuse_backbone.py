"""Continuing from a backbone alone (no heads), measured: the head warm-up of ``dinolite.reuse`` against a naive
continuation (fresh heads, the usual LR, no freeze, no teacher copy, no re-centering), side by side, each a real
``dinolite pretrain`` with a wall-clock budget and one CPU thread. Prints one JSON line per run and writes JSON.

    python benchmarks/reuse_backbone.py SOURCE [--minutes 5] [--data KEY=VALUE ...] [--json PATH]

SOURCE is any backbone-only layout (a DINOv2 .pth, a Hugging Face folder, timm weights, a dinolite export).
``--data`` items are overrides for the data (default: Animal-Shape as one-channel idx files, learning_data.py).
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--online-every", type=int, default=20)
    p.add_argument("--data", nargs="*", default=None, help="data overrides (default: Animal-Shape idx files)")
    p.add_argument("--out", default="runs/reuse-backbone")
    p.add_argument("--json", default="benchmarks/results/reuse_backbone.json")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    out, env = Path(args.out), {**os.environ, "OMP_NUM_THREADS": "1"}
    data = args.data
    if data is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from learning_data import animal_shape_idx

        data = [f"data.root={animal_shape_idx(out / 'data' / 'animal_shape_idx')}", "augment.mean=[0.273]",
                "augment.std=[0.406]"]
    common = [*data, f"model.init={args.source}", f"eval.online_every={args.online_every}",
              *(TINY if args.tiny else [])]
    before = source_knn(args.source, data, args.tiny, env)
    runs = [("warmup", common), ("naive", [*common, *NAIVE])]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: one_run(r[0], r[1], out, args.minutes, env), runs))
    for r in results:
        r["source_knn"] = before
        print(json.dumps(r), flush=True)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": args.source, "minutes": args.minutes, "threads_per_run": 1,
                                "tiny": args.tiny, "results": results}, indent=1) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
