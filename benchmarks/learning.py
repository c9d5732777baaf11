"""Does the quickstart recipe learn on data it was not tuned on? One recipe, the quickstart's time budget,
several real datasets; for each, the teacher's k-NN beside the same network at random initialisation and
beside raw pixels, the gaps to both, the teacher's final entropy and KL to uniform, the monitor's warnings,
steps done, steps/s, wall time and threads. Prints a markdown table and writes JSON with its provenance.

    pip install --no-deps animal-shape-mnist    # once: Animal-Shape (see learning_data.py)
    pip install scikit-learn                    # once: the digits (scikit-learn's load_digits; benchmarks only)
    python benchmarks/learning.py [--budget-minutes 10] [--only NAME ...] [--json benchmarks/results/learning.json]

Each run is ``dinolite pretrain`` with the recipe as it is (configs/quickstart.yaml) under
``train.budget_minutes=10`` (``--budget-minutes``): each dataset gets the steps its budget gives, as a
user's quickstart would, one run at a time (the default; the budget is wall time, so runs sharing the
cores each get fewer steps). ``--images N`` instead runs a fixed length (N / batch steps, budget off) so
every dataset sees the same number of images; with it ``--parallel 2`` (one thread each) is fair.
``--set`` adds ``key=value`` overrides to every run (to compare recipes); ``--only`` picks datasets by
name: its rows replace theirs in an existing JSON of the same mode, the others are kept.

Datasets: Fashion-MNIST (all 60,000, and its first 5k/10k/20k), Animal-Shape (8,000 / 2,000), digits
(scikit-learn's 1,797 8 x 8 handwritten digits upscaled to 28 x 28; 1,297 / 500, not used to tune the
recipe). The JSON records per dataset: teacher, random-init and raw-pixel k-NN, ``gap_to_pixels``
(teacher - pixels), ``teacher_minus_random``, warnings, steps done (and planned), steps/s of training
alone, wall time, threads, the exact ``dinolite`` command and the hash of its resolved config.yaml; and
``provenance`` (benchmarks/provenance.py: recipe, commit, machine, steps/s, the command line).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_data import animal_shape_folder, digits_folder, folder_stats  # noqa: E402
from provenance import provenance  # noqa: E402
from run_record import parse_output, summarize  # noqa: E402

RECIPE = "configs/quickstart.yaml"
FMNIST = ["data.source=fashion_mnist", "data.root=/usr/share/datasets/fashion-mnist"]
TUNED_ON = "fashion-mnist (full) and fashion-mnist-10k"
NAMES = ["fashion-mnist", "fashion-mnist-5k", "fashion-mnist-10k", "fashion-mnist-20k", "animal-shape", "digits"]


def _folder(root: Path, mean: float, std: float) -> list[str]:
    """An image folder of 28 x 28 grey images; the folder source decodes to RGB: the data's own statistics
    on each channel."""
    return ["data.source=folder", f"data.root={root}", "data.train_dir=train", "data.val_dir=test",
            "data.num_workers=0", "data.decode_size=28", f"augment.mean=[{mean},{mean},{mean}]",
            f"augment.std=[{std},{std},{std}]"]


def datasets(data_dir: Path, names: list[str] | None = None) -> dict[str, list[str]]:
    """Name -> data overrides, for ``names`` (default all), preparing the folders these need (once).
    Fashion-MNIST subsets are its first N training images; queries are always the whole test split."""
    out: dict[str, list[str]] = {}
    for name in names or NAMES:
        if name == "fashion-mnist":
            out[name] = FMNIST
        elif name.startswith("fashion-mnist-"):
            out[name] = FMNIST + [f"data.subset={int(name.split('-')[-1][:-1]) * 1000}"]
        elif name == "animal-shape":
            out[name] = _folder(animal_shape_folder(data_dir / "animal_shape"), 0.273, 0.406)
        elif name == "digits":
            root = digits_folder(data_dir / "digits")
            stats = folder_stats(root)
            out[name] = _folder(root, stats["mean"], stats["std"])
        else:
            raise SystemExit(f"unknown dataset {name!r}: one of {', '.join(NAMES)}")
    return out


def run_command(name: str, data: list[str], args, out_dir: Path) -> list[str]:
    """The ``dinolite pretrain`` command of one dataset."""
    if args.images:  # fixed length: every dataset sees the same images
        length = ["train.budget_minutes=0", f"optim.total_steps={args.images // args.batch}",
                  f"optim.batch_size={args.batch}"]
    else:  # the quickstart's time budget, the recipe's batch
        length = [f"train.budget_minutes={args.budget_minutes:g}"]
    threads = [f"train.threads={args.threads}"] if args.threads else []
    return [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", *data,
            f"train.output_dir={out_dir / name}", *length, "eval.knn_pixels=true", "eval.knn_random_init=true",
            *threads, *args.set]


def one_run(name: str, data: list[str], args, out_dir: Path) -> dict:
    run_dir = out_dir / name
    cmd = run_command(name, data, args, out_dir)
    if run_dir.exists():  # a fresh run: an old one would be resumed (or only re-evaluated)
        shutil.rmtree(run_dir)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "stdout.log").write_text(proc.stdout + proc.stderr)
    shown = ["dinolite", *cmd[3:]]  # as a user types it
    if proc.returncode != 0:
        return {"dataset": name, "command": shown, "returncode": proc.returncode,
                "error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
    printed = parse_output(proc.stdout.splitlines())
    s = summarize(run_dir)
    return {
        "dataset": name, "command": shown,
        "teacher_knn": s["teacher_knn"], "random_init_knn": s["random_init_knn"], "pixels_knn": s["pixels_knn"],
        "gap_to_pixels": s["gap_to_pixels"], "teacher_minus_random": s["teacher_minus_random"],
        "collapse_warnings": s["warnings"],
        "steps_done": s["steps_done"], "steps_planned": printed["planned_steps"], "total_steps": s["total_steps"],
        "steps_per_epoch": printed["steps_per_epoch"], "images_seen": s["steps_done"] * s["batch"],
        "batch": s["batch"], "budget_minutes": s["budget_minutes"],
        "threads": s["threads"], "threads_effective": s["threads"] or torch_default_threads(),
        "s_per_step_at_start": printed["planned_s_per_step"],
        "wall_s": round(wall, 1), "train_s": s["train_s"], "steps_per_s": s["steps_per_s"],
        "final_entropy": s["final_entropy"], "final_kl_uniform": s["final_kl_uniform"],
        "max_entropy": s["max_entropy"], "online_knn": s["online_knn"], "replans": s["replans"],
        "config_sha256": s["config_sha256"],
    }


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


def table(results: list[dict]) -> str:
    lines = ["| dataset | teacher k-NN | random init | raw pixels | teacher - pixels | teacher - random "
             "| final H / log K | final KL | warnings | steps | steps/s | wall |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | error: {r['error']} ||||||||||")
            continue
        warn = "; ".join(w.split(":")[0] for w in r["collapse_warnings"]) or "none"
        lines.append(f"| {r['dataset']} | {r['teacher_knn']:.2f} % | {r['random_init_knn']:.2f} % "
                     f"| {r['pixels_knn']:.2f} % | {r['gap_to_pixels']:+.2f} | {r['teacher_minus_random']:+.2f} "
                     f"| {r['final_entropy']:.2f} / {r['max_entropy']:.2f} | {r['final_kl_uniform']:.2f} | {warn} "
                     f"| {r['steps_done']} | {r['steps_per_s']:.2f} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def mode(args) -> dict:
    """What makes two invocations' rows comparable (a partial rerun merges only into a JSON of the same mode)."""
    length = {"images": args.images, "batch": args.batch} if args.images else {"budget_minutes": args.budget_minutes}
    return {**length, "recipe": RECIPE, "overrides": list(args.set)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="train.budget_minutes of every run (the quickstart's 10: the whole command, "
                        "final k-NN included)")
    p.add_argument("--images", type=int, default=0,
                   help="instead of the budget: a fixed length, images seen by every run (steps x --batch)")
    p.add_argument("--batch", type=int, default=256,
                   help="batch of the --images mode (the budget mode keeps the recipe's)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (keep 1 under a time budget)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (0: 1 when parallel, else torch's default)")
    p.add_argument("--only", nargs="*", default=None, help=f"dataset names to run (default: all of {', '.join(NAMES)})")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--out", default="runs/learning-benchmark", help="folder of the runs and the prepared data")
    p.add_argument("--json", default="benchmarks/results/learning.json")
    args = p.parse_args(argv)
    if not args.threads and args.parallel > 1:
        args.threads = 1
    record = provenance(RECIPE, argv=None if argv is None else ["benchmarks/learning.py", *argv])
    out = Path(args.out)
    chosen = datasets(out / "data", args.only)
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda item: one_run(item[0], item[1], args, out), chosen.items()))
    record["steps_per_s"] = {r["dataset"]: r.get("steps_per_s") for r in results}
    record["datasets"] = list(chosen)
    invocations = [record]
    path = Path(args.json)
    if args.only and path.is_file():  # a partial rerun replaces its datasets' rows, keeps the others
        saved = json.loads(path.read_text())
        if saved.get("mode") == mode(args):
            kept = [r for r in saved["results"] if r["dataset"] not in chosen]
            results = sorted(kept + results, key=lambda r: NAMES.index(r["dataset"]) if r["dataset"] in NAMES else 99)
            still = {r["dataset"] for r in kept}  # earlier invocations that still made a row
            invocations = [i for i in saved.get("provenance", []) if still & set(i.get("datasets", []))] + invocations
        else:
            print(f"note: {path} holds another mode ({saved.get('mode')}); its rows are replaced", flush=True)
    print(table(results))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mode": mode(args), "parallel": args.parallel, "threads": args.threads,
                                "tuned_on": TUNED_ON, "results": results, "provenance": invocations}, indent=1) + "\n")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
