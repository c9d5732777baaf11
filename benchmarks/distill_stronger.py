"""Distillation from a teacher with more compute than its students: the quickstart's teacher (its 10 minutes on
both cores) teaches the shipped two-student recipe (``configs/distill_fmnist.yaml``: a ViT of half its width and
depth and a ResNet-10t), and each student stands beside its teacher and its DINO-from-scratch twin at equal
student compute. Prints a markdown table and writes JSON with provenance.

    python benchmarks/distill_stronger.py --teacher runs/learning-curve/10min   # a finished quickstart run
    python benchmarks/distill_stronger.py                                        # trains the teacher first

The phases (every run a real ``dinolite`` command with a wall-clock budget, ``--minutes``, the whole command):

1. without ``--teacher``: the teacher, ``dinolite pretrain`` (the quickstart) on both cores;
2. ``dinolite distill distill.teacher=<teacher>`` with the shipped recipe as it is, on both cores: both students
   in one run, one teacher forward for the two;
3. the twins side by side, one core each: the half-size ViT and ResNet-10t trained by ``dinolite pretrain`` (the
   quickstart's objective; iBOT off for the CNN, which has no patch tokens).

Equal student compute: the distillation run's two cores for two students are one core each, what each twin has.
The goal (issue 30): each student within 2 points of its teacher and ahead of its twin.
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
from provenance import provenance, write_result  # noqa: E402
from run_record import read_config, read_metrics, summarize  # noqa: E402

HALF_VIT = ["model.arch=vit_tiny_patch16_224", "model.patch_size=7", "model.embed_dim=64", "model.depth=2",
            "model.num_heads=2"]
CNN = ["model.arch=resnet10t", "model.patch_size=null", "model.embed_dim=null", "model.depth=null",
       "model.num_heads=null", "loss.ibot_weight=0"]
RECIPE = "configs/distill_fmnist.yaml"
TWINS = [("twin-vit-half", ["pretrain", *HALF_VIT]), ("twin-resnet10t", ["pretrain", *CNN])]
RUNS = ("teacher", "distilled", "twin-vit-half", "twin-resnet10t")


def run(name: str, command: list[str], out: Path, minutes: float, threads: int, extra: list[str]) -> dict:
    """One ``dinolite`` command in its own process; its final k-NN figures, baselines, steps and steps/s."""
    run_dir = out / name
    cmd = [sys.executable, "-m", "dinolite.cli", *command[:1], "--no-progress", f"train.output_dir={run_dir}",
           f"train.budget_minutes={minutes:g}", f"train.threads={threads}", "eval.knn_pixels=true",
           *command[1:], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    shown = ["dinolite", *cmd[3:]]
    if proc.returncode != 0:
        return {"run": name, "command": shown, "error": lines[-3:]}
    rows = read_metrics(run_dir)
    batch = int(read_config(run_dir)["optim"]["batch_size"])
    train = [r for r in rows if "loss" in r]
    train_s = sum((r["step"] - p["step"]) * batch / r["images_per_s"]
                  for p, r in zip(([{"step": 0}] + train)[:-1], train, strict=True) if r.get("images_per_s"))
    steps = train[-1]["step"] if train else 0
    final = {k: v for r in rows for k, v in r.items() if k.startswith("knn_top1")}
    base = json.loads((run_dir / "baselines.json").read_text())["values"]
    return {"run": name, "command": shown, "threads": threads, "wall_s": round(wall, 1), "steps": steps,
            "batch": batch, "steps_per_s": round(steps / train_s, 3) if train_s else None, "final": final,
            "baselines": {k: v for k, v in base.items() if k.startswith("knn")},
            "warnings": [w.split(":")[0] for r in train for w in r.get("warnings", [])],
            "knn_line": [line for line in lines if line.startswith("k-NN top-1")][-1:]}


def student_rows(distilled: dict, twins: dict[str, dict], teacher: dict) -> list[dict]:
    """One row per student: its k-NN, its random init, its twin's, its teacher's and raw pixels, and the goal."""
    teacher_knn = teacher["final"].get("knn_top1")
    rows = []
    for student, twin in twins.items():
        knn = distilled["final"].get(f"knn_top1_{student}")
        twin_knn = twin.get("final", {}).get("knn_top1")
        rows.append({"student": student, "distilled_knn": knn, "twin_knn": twin_knn, "teacher_knn": teacher_knn,
                     "random_init_knn": distilled["final"].get(f"knn_top1_random_init_{student}"),
                     "pixels_knn": distilled["final"].get("knn_top1_pixels"),
                     "distill_steps": distilled.get("steps"), "distill_steps_per_s": distilled.get("steps_per_s"),
                     "twin_steps": twin.get("steps"), "twin_steps_per_s": twin.get("steps_per_s"),
                     "within_2_of_teacher": None if knn is None or teacher_knn is None else knn >= teacher_knn - 2,
                     "ahead_of_twin": None if knn is None or twin_knn is None else knn > twin_knn})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="a finished quickstart run directory (default: train one)")
    p.add_argument("--minutes", type=float, default=10.0, help="each run's budget (teacher, distillation, twins)")
    p.add_argument("--students", nargs=2, default=["vit_tiny_patch16_224-w64-d2", "resnet10t"],
                   help="the recipe's student names, as the k-NN keys give them (ViT first, then the CNN)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run (tests)")
    p.add_argument("--out", default="runs/distill-stronger")
    p.add_argument("--json", default="benchmarks/results/distill_stronger.json")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS),
                   help="the runs to (re)run; the others are read from --json (default: all)")
    args = p.parse_args(argv)
    out = Path(args.out)
    saved = json.loads(Path(args.json).read_text())["runs"] if Path(args.json).is_file() else {}
    results: dict[str, dict] = {k: v for k, v in saved.items() if k not in args.runs}
    teacher_dir = Path(args.teacher) if args.teacher else out / "teacher"
    if args.teacher is not None:
        results["teacher"] = {"run": "teacher", "run_dir": str(teacher_dir),
                              "final": {k: v for r in read_metrics(teacher_dir) for k, v in r.items()
                                        if k.startswith("knn_top1")},
                              "steps": max((r["step"] for r in read_metrics(teacher_dir) if "loss" in r), default=0),
                              "threads": read_config(teacher_dir)["train"].get("threads"),
                              "steps_per_s": summarize(teacher_dir)["steps_per_s"]}
    elif "teacher" in args.runs:
        results["teacher"] = run("teacher", ["pretrain"], out, args.minutes, 2, args.set)
    if "distilled" in args.runs:
        results["distilled"] = run("distilled", ["distill", f"distill.teacher={teacher_dir}"], out, args.minutes, 2,
                                   args.set)
    twins = [(name, command) for name, command in TWINS if name in args.runs]
    with ThreadPoolExecutor(2) as pool:  # side by side, one core each
        for r in pool.map(lambda t: run(t[0], t[1], out, args.minutes, 1, args.set), twins):
            results[r["run"]] = r
    for r in results.values():
        print(json.dumps({k: r.get(k) for k in ("run", "steps", "steps_per_s", "final", "error")}), flush=True)
    rows = student_rows(results["distilled"], dict(zip(args.students, (results[name] for name, _ in TWINS),
                                                       strict=True)), results["teacher"])
    print("| student | distilled k-NN (steps) | DINO twin (steps) | its teacher | random init | raw pixels | "
          "within 2 of teacher | ahead of twin |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} %"

    for r in rows:
        print(f"| {r['student']} | {pct(r['distilled_knn'])} ({r['distill_steps']}) | {pct(r['twin_knn'])} "
              f"({r['twin_steps']}) | {pct(r['teacher_knn'])} | {pct(r['random_init_knn'])} | {pct(r['pixels_knn'])} "
              f"| {r['within_2_of_teacher']} | {r['ahead_of_twin']} |")
    write_result(args.json, {"minutes": args.minutes, "students": rows, "runs": results,
                             "provenance": provenance(RECIPE, steps_per_s={k: r.get("steps_per_s")
                                                                           for k, r in results.items()})})
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
