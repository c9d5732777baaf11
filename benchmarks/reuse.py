"""Reusing a pretrained backbone, measured: continue pretraining on data it was not tuned on, and distil it
into smaller students, each beside the runs it must beat. Prints markdown tables and writes JSON.

    pip install --no-deps animal-shape-mnist      # once: Animal-Shape (see learning_data.py)
    python benchmarks/reuse.py [--minutes 10] [--json benchmarks/results/reuse.json]

Every run is a real ``dinolite`` command with a wall-clock budget (``train.budget_minutes``: the whole
command, evaluation included) and one CPU thread; two run at a time, so each has one core of a 2-core
machine. The phases, each two runs side by side:

1. the quickstart's teacher (Fashion-MNIST, ``--minutes``) | ResNet-10t trained with DINO from scratch;
2. the teacher distilled into a ViT of half its width and depth | into ResNet-10t (``dinolite distill``);
3. the half-size ViT trained with DINO from scratch | Animal-Shape from scratch for ``--minutes``;
4. Animal-Shape continued from the teacher (``model.init``) | from scratch, both for half of ``--minutes``;
5. the half-size ViT distilled with the ``dino_head`` objective | ``configs/distill_fmnist.yaml`` as it is (both
   students in one run, one teacher forward for the two).

Every k-NN follows the quickstart's protocol (train split as bank, test split as queries, k = 20, T = 0.07).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_data import animal_shape_idx  # noqa: E402

HALF_VIT = {"arch": "vit_tiny_patch16_224", "patch_size": 7, "embed_dim": 64, "depth": 2, "num_heads": 2}
CNN = ["model.arch=resnet10t", "model.patch_size=null", "model.embed_dim=null", "model.depth=null",
       "model.num_heads=null", "loss.ibot_weight=0"]


def students(model: dict) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in {**model, "drop_path_rate": 0.0, "out_dim": 1024, "hidden_dim": 512,
                                                   "bottleneck_dim": 128}.items())
    return f"distill.students=[{{{fields}}}]"


def plan(out: Path, minutes: float, animal: Path) -> list[list[tuple[str, list[str]]]]:
    teacher = out / "quickstart"
    animal_data = [f"data.root={animal}", "augment.mean=[0.273]", "augment.std=[0.406]"]
    half = [f"model.{k}={v}" for k, v in HALF_VIT.items()]
    return [
        [("teacher", ["pretrain"]), ("dino-resnet10t", ["pretrain", *CNN])],
        [("distill-vit-half", ["distill", f"distill.teacher={teacher}", students(HALF_VIT)]),
         ("distill-resnet10t", ["distill", f"distill.teacher={teacher}", students({"arch": "resnet10t"})])],
        [("dino-vit-half", ["pretrain", *half]),
         ("animal-scratch-full", ["pretrain", *animal_data])],
        [("animal-continued-half", ["pretrain", *animal_data, f"model.init={teacher}",
                                    f"train.budget_minutes={minutes / 2:g}"]),
         ("animal-scratch-half", ["pretrain", *animal_data, f"train.budget_minutes={minutes / 2:g}"])],
        [("distill-vit-half-dino-head", ["distill", f"distill.teacher={teacher}", students(HALF_VIT),
                                         "distill.objective=dino_head"]),
         ("distill-recipe-both", ["distill", f"distill.teacher={teacher}"])],
    ]


def one_run(name: str, args: list[str], out: Path, minutes: float) -> dict:
    run_dir = out / ("quickstart" if name == "teacher" else name)
    command = args[0]
    cmd = [sys.executable, "-m", "dinolite.cli", command, "--no-progress", f"train.output_dir={run_dir}",
           f"train.budget_minutes={minutes:g}", "train.threads=1", "eval.knn_pixels=true", *args[1:]]
    t0, load_start = time.time(), os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return {"run": name, "error": lines[-1:] if lines else [], "command": cmd[2:]}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    final = {k: v for r in rows for k, v in r.items() if k.startswith("knn_top1")}
    base = json.loads((run_dir / "baselines.json").read_text())["values"]
    steps = train[-1]["step"] if train else 0
    intervals = zip([{"step": 0}] + train, train, strict=False)
    train_s = sum((r["step"] - p["step"]) * 256 / r["images_per_s"] for p, r in intervals)
    return {"run": name, "command": ["dinolite", *cmd[3:]], "steps": steps, "wall_s": round(wall, 1),
            "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "steps_per_s": round(steps / train_s, 3) if train_s else None, "final": final,
            "baselines": {k: v for k, v in base.items() if k.startswith("knn")},
            "warnings": [w.split(":")[0] for r in train for w in r.get("warnings", [])],
            "last_line": [line for line in lines if line.startswith("k-NN top-1")][-1:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default="runs/reuse-benchmark")
    p.add_argument("--phases", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--json", default="benchmarks/results/reuse.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    animal = animal_shape_idx(out / "data" / "animal_shape_idx")
    path = Path(args.json)
    results = {r["run"]: r for r in json.loads(path.read_text())["results"]} if path.is_file() else {}
    for number, phase in enumerate(plan(out, args.minutes, animal), 1):
        if number not in args.phases:
            continue
        with ThreadPoolExecutor(2) as pool:
            for r in pool.map(lambda item: one_run(item[0], item[1], out, args.minutes), phase):
                results[r["run"]] = r
                print(json.dumps(r), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"minutes": args.minutes, "threads_per_run": 1, "runs_at_a_time": 2,
                                    "cpu": os.cpu_count(), "results": list(results.values())}, indent=1) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
