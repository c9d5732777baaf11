"""What a finished ``dinolite pretrain`` run says about itself, read back by the benchmarks (learning.py,
quickstart.py): its printed lines (the budget's plan, the final k-NN line, the finished line) and its run
directory (metrics.jsonl, baselines.json, config.yaml)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

PLAN = re.compile(r"time budget (?P<minutes>[\d.]+) min: (?P<s_per_step>[\d.]+) s/step measured here "
                  r"\((?P<images_per_s>[\d.]+) images/s\), (?P<steps>\d+) steps planned \((?P<epochs>[\d.]+) epochs\)")
TRAINING = re.compile(r"training (?P<steps>\d+) steps of (?P<batch>\d+) images \((?P<epochs>[\d.]+) epochs of "
                      r"(?P<images>\d+), (?P<per_epoch>\d+) steps per epoch\)")
KNN = re.compile(r"teacher (?P<teacher>[\d.]+) %(?:, same architecture at random init (?P<random>[\d.]+) %)?"
                 r"(?:, raw pixels (?P<pixels>[\d.]+) %)?")
FINISHED = re.compile(r"(?P<state>finished|stopped) at step (?P<step>\d+)/(?P<total>\d+) in (?P<seconds>\d+) s")


def _num(text: str | None) -> float | None:
    return None if text is None else float(text)


def parse_output(lines: list[str]) -> dict[str, Any]:
    """The figures of a run's printed lines; a key is None when its line was not printed."""
    out: dict[str, Any] = {"planned_steps": None, "planned_s_per_step": None, "planned_images_per_s": None,
                           "planned_epochs": None, "training_steps": None, "steps_per_epoch": None,
                           "teacher_knn": None, "random_init_knn": None, "pixels_knn": None, "knn_line": None,
                           "finished": None, "finished_line": None}
    for line in lines:
        if m := PLAN.search(line):
            out.update(planned_steps=int(m["steps"]), planned_s_per_step=float(m["s_per_step"]),
                       planned_images_per_s=float(m["images_per_s"]), planned_epochs=float(m["epochs"]))
        elif m := TRAINING.search(line):
            out.update(training_steps=int(m["steps"]), steps_per_epoch=int(m["per_epoch"]))
        elif line.startswith("k-NN top-1") and (m := KNN.search(line)):
            out.update(teacher_knn=float(m["teacher"]), random_init_knn=_num(m["random"]),
                       pixels_knn=_num(m["pixels"]), knn_line=line)
        elif m := FINISHED.search(line):
            out.update(finished={"state": m["state"], "step": int(m["step"]), "total": int(m["total"]),
                                 "seconds": int(m["seconds"])}, finished_line=line)
    return out


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))  # type: ignore[return-value]


def summarize(run_dir: Path) -> dict[str, Any]:
    """A run directory's figures: steps done, the final step count (after any re-plan), training time alone
    and steps/s, the final k-NN and its baselines, the teacher's last entropy and KL, the monitor's warnings,
    the online k-NN, the ``replan`` records, and the sha256 of the resolved config.yaml."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    cfg = read_config(run_dir)
    batch = int(cfg["optim"]["batch_size"])
    train = [r for r in rows if "loss" in r]
    finals = [r for r in rows if "knn_top1" in r]
    baselines_path = run_dir / "baselines.json"
    base = json.loads(baselines_path.read_text())["values"] if baselines_path.is_file() else {}
    # training time alone (no baselines, online k-NN or checkpoints): each log interval's steps at its images/s
    train_s = sum((r["step"] - p["step"]) * batch / r["images_per_s"]
                  for p, r in zip(([{"step": 0}] + train)[:-1], train, strict=True) if r.get("images_per_s"))
    steps_done = train[-1]["step"] if train else 0
    teacher = finals[-1]["knn_top1"] if finals else None
    random_init = base.get("knn_top1_random_init")
    pixels = base.get("knn_top1_pixels")
    out_dim = cfg.get("model", {}).get("out_dim")
    plan_path = run_dir / "plan.json"  # the run's length after any re-plan (dinolite/pretraining/plan.py)
    total_steps = json.loads(plan_path.read_text())["total_steps"] if plan_path.is_file() \
        else cfg["optim"].get("total_steps")
    return {
        "steps_done": steps_done, "total_steps": total_steps, "batch": batch,
        "budget_minutes": cfg["train"].get("budget_minutes"), "threads": cfg["train"].get("threads"),
        "teacher_knn": teacher, "random_init_knn": random_init, "pixels_knn": pixels,
        "gap_to_pixels": None if teacher is None or pixels is None else round(teacher - pixels, 2),
        "teacher_minus_random": None if teacher is None or random_init is None else round(teacher - random_init, 2),
        "final_entropy": train[-1].get("teacher_entropy") if train else None,
        "final_kl_uniform": train[-1].get("kl_uniform") if train else None,
        "max_entropy": math.log(int(out_dim)) if out_dim else None,
        "warnings": [w for r in train for w in r.get("warnings", [])],
        "online_knn": [(r["step"], round(r["knn_online"], 2)) for r in train if "knn_online" in r],
        "replans": [{"step": r["step"], "replan": r["replan"]} for r in rows if "replan" in r],
        "train_s": round(train_s, 1),
        "steps_per_s": round(steps_done / train_s, 3) if train_s else None,
        "s_per_step": round(train_s / steps_done, 3) if steps_done else None,
        "config_sha256": hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest(),
    }
