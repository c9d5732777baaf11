"""The recipe search's proxy: quickstart variants on the first 10,000 Fashion-MNIST training images, each a
``dinolite pretrain`` of its own under the same time budget, two at a time with one thread each.

    python benchmarks/recipe_sweep.py --minutes 10 base "bs64:optim.batch_size=64" \
        "bs64-m99:optim.batch_size=64,optim.momentum_teacher_end=0.99"
    python benchmarks/recipe_sweep.py --collect runs/recipe-sweep     # the table of runs already made

A variant is ``NAME`` (the recipe unchanged) or ``NAME:key=value,key=value``. The k-NN protocol of every
run: the 10,000 training images as the bank, the first 2,000 test images as queries (random init and raw
pixels under it: ``--baselines`` scores them once, in the first run). Tuning happens here only, on this
subset; the learning benchmark's datasets (Animal-Shape, digits, the 5k/20k subsets) are never tuned on.
Prints a markdown table and writes JSON (every run's figures, its overrides, its online k-NN curve and the
hash of its resolved config.yaml) with the provenance of ``provenance.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance  # noqa: E402
from run_record import parse_output, summarize  # noqa: E402

RECIPE = "configs/quickstart.yaml"
PROXY = ["data.subset=10000", "data.test_subset=2000", "train.checkpoint_every_minutes=100"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME`` or ``NAME:key=value,key=value`` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    # a comma inside brackets belongs to a list value (augment.global_crops_scale=[0.6,1.0])
    overrides = [o for o in re.split(r",(?![^\[]*\])", rest) if o]
    if not name or any("=" not in o for o in overrides):
        raise SystemExit(f"recipe_sweep: bad variant {text!r}: write NAME or NAME:key=value,key=value")
    return name, overrides


def command(name: str, overrides: list[str], out: Path, minutes: float, threads: int, baselines: bool) -> list[str]:
    scores = [] if baselines else ["eval.knn_random_init=false", "eval.knn_pixels=false"]
    return [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", "--config", RECIPE, *PROXY,
            f"train.threads={threads}", f"train.budget_minutes={minutes:g}", f"train.output_dir={out / name}",
            *scores, *overrides]


def run_one(name: str, overrides: list[str], args) -> None:
    cmd = command(name, overrides, args.out, args.minutes, args.threads, args.baselines and name == args.first)
    log = args.out / f"{name}.log"
    args.out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    (args.out / f"{name}.json").write_text(json.dumps({"overrides": overrides, "command": cmd}))


def collect(out: Path) -> list[dict]:
    """Every finished run under ``out``: its overrides, printed figures and run-directory summary."""
    rows = []
    for spec in sorted(out.glob("*.json")):
        name, run_dir = spec.stem, out / spec.stem
        if not (run_dir / "metrics.jsonl").is_file():
            continue
        printed = parse_output((out / f"{name}.log").read_text().splitlines())
        rows.append({"name": name, **json.loads(spec.read_text()), **summarize(run_dir),
                     "knn_line": printed["knn_line"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| variant | overrides | teacher k-NN | steps | s/step | online k-NN (step: %) |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in sorted(rows, key=lambda r: -(r["teacher_knn"] or 0)):
        online = ", ".join(f"{s}: {v:.1f}" for s, v in r["online_knn"][-3:])
        knn = f"{r['teacher_knn']:.2f} %" if r["teacher_knn"] is not None else "-"
        lines.append(f"| {r['name']} | {' '.join(r['overrides']) or '(the recipe)'} | {knn} | {r['steps_done']} | "
                     f"{r['s_per_step']} | {online} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*", help="NAME or NAME:key=value,key=value")
    p.add_argument("--minutes", type=float, default=10.0, help="each run's train.budget_minutes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time")
    p.add_argument("--baselines", action="store_true", help="the first run also scores random init and raw pixels")
    p.add_argument("--out", type=Path, default=Path("runs/recipe-sweep"))
    p.add_argument("--collect", type=Path, help="only tabulate the runs already under this folder")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/recipe_sweep.json"))
    args = p.parse_args(argv)
    if args.collect is None:
        variants = [parse_variant(v) for v in args.variants]
        if not variants:
            p.error("name at least one variant, or --collect a folder")
        args.first = variants[0][0]
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda v: run_one(v[0], v[1], args), variants))
    rows = collect(args.collect or args.out)
    print(table(rows))
    record = {"proxy": PROXY, "minutes": args.minutes, "threads": args.threads, "parallel": args.parallel,
              "runs": rows, "provenance": provenance(recipe=RECIPE, steps_per_s={r["name"]: r["steps_per_s"]
                                                                                  for r in rows})}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
