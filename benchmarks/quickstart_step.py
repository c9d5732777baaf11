"""The quickstart's training step on this CPU: seconds per step and images/s of ``DINOMethod.train_step`` (the one
DINO step of ``dinolite pretrain``) on real Fashion-MNIST batches, for each batch size x precision x compile asked
for, and the profile of one setting by operator (where the step's time goes).

    python benchmarks/quickstart_step.py                                # 256 and 64; fp32 and bf16; eager
    python benchmarks/quickstart_step.py --batch 64 --compile           # torch.compile of the backbones too

Each setting builds the quickstart's ``Pretrainer`` (configs/quickstart.yaml with the given overrides, no
evaluation), runs ``--warmup`` steps, then times ``--steps`` steps (augmentation included, as in a run). Settings
run one after the other in this process, alone: run it with nothing else on the machine. Prints a table and
writes JSON with the provenance of ``provenance.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance, write_result  # noqa: E402

RECIPE = "configs/quickstart.yaml"
QUIET = ["train.budget_minutes=0", "optim.total_steps=1000", "eval.online_every=0", "eval.knn_at_end=false",
         "eval.knn_random_init=false", "eval.knn_pixels=false"]


def build(batch: int, precision: str, compiled: bool, extra: list[str], out: Path):
    from dinolite.config import load_config
    from dinolite.pretraining.train import Pretrainer

    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(RECIPE, [*QUIET, f"train.output_dir={out}", f"optim.batch_size={batch}",
                               f"train.precision={precision}", f"train.compile={str(compiled).lower()}", *extra])
    return Pretrainer(cfg, progress=False)


def steps(trainer, n: int, first: int):
    """Run ``n`` real steps from step ``first`` (crops made from the loader's batches, as in a run)."""
    method, plan = trainer.method, trainer.plan
    if not hasattr(trainer, "bench_batches"):  # one stream: an epoch's shuffle is drawn once, as in a run
        trainer.bench_batches = (b for epoch in itertools.count() for b in trainer.loader.epoch(epoch))
    batches = trainer.bench_batches
    loss = None
    for i in range(first, first + n):
        images, hw, _ = next(batches)
        loss, _ = method.train_step(method.make_crops(images, hw, i), method.schedule(i, plan))
    return loss


def measure(batch: int, precision: str, compiled: bool, args, out: Path) -> dict:
    trainer = build(batch, precision, compiled, args.set, out)
    t0 = time.perf_counter()
    float(steps(trainer, args.warmup, 0))
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    float(steps(trainer, args.steps, args.warmup))
    per_step = (time.perf_counter() - t0) / args.steps
    return {"batch": batch, "precision": precision, "compile": compiled, "s_per_step": round(per_step, 4),
            "images_per_s": round(batch / per_step, 1), "warmup_s": round(warm_s, 1)}


def profile(batch: int, args, out: Path) -> list[dict]:
    """Self CPU time by operator over 3 steps, the 15 largest, as shares of the total."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer = build(batch, "fp32", False, args.set, out)
    steps(trainer, 3, 0)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        steps(trainer, 3, 3)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "share_pct": round(100 * e.self_cpu_time_total / total, 1),
             "ms_per_step": round(e.self_cpu_time_total / 1000 / 3, 1), "calls_per_step": e.count // 3}
            for e in events[:15]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="*", default=[256, 64])
    p.add_argument("--precision", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="also each setting with train.compile=true")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--profile-batch", type=int, default=64, help="the batch whose fp32 step is profiled (0: none)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every setting")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/quickstart_step.json"))
    args = p.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="quickstart-step-"))
    rows = []
    for batch, precision, compiled in itertools.product(args.batch, args.precision,
                                                        [False, True] if args.compile else [False]):
        rows.append(measure(batch, precision, compiled, args, out / "run"))
        print(json.dumps(rows[-1]), flush=True)
    ops = profile(args.profile_batch, args, out / "run") if args.profile_batch else []
    shutil.rmtree(out, ignore_errors=True)
    print("| batch | precision | compile | s/step | images/s |\n| ---: | --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch']} | {r['precision']} | {r['compile']} | {r['s_per_step']} | {r['images_per_s']} |")
    for o in ops:
        print(f"{o['share_pct']:5.1f} %  {o['ms_per_step']:7.1f} ms/step  {o['op']}")
    record = {"rows": rows, "profile_batch": args.profile_batch, "profile": ops, "threads": torch.get_num_threads(),
              "provenance": provenance(recipe=RECIPE, steps_per_s={f"{r['batch']}/{r['precision']}/{r['compile']}":
                                                                    round(1 / r["s_per_step"], 3) for r in rows})}
    write_result(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
