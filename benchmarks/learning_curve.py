"""Minutes to pixels: the README's first command (``dinolite pretrain``, configs/quickstart.yaml) at several time
budgets, one run each and alone, its teacher's k-NN beside random init and raw pixels. It tells a user how long
this machine needs to pass raw pixels, and whether the recipe keeps improving with time or plateaus.

    python benchmarks/learning_curve.py                        # 5, 10, 20 and 40 minutes: about 80 minutes
    python benchmarks/learning_curve.py --minutes 5 20         # some budgets; the others' results are kept

Each budget is one ``benchmarks/quickstart.py`` measurement (the same command, record and provenance) with
``train.budget_minutes`` set, kept in ``benchmarks/results/learning_curve.json`` under ``"<minutes>min"``; the plot
(``docs/img/learning_curve.png``, ``--plot``) draws every budget's final teacher k-NN against its minutes, and each
run's online k-NN (1,000 test images against a 5,000-image bank) against its training step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quickstart  # noqa: E402

PLOT = "docs/img/learning_curve.png"


def key(minutes: float) -> str:
    return f"{minutes:g}min"


def curve_row(result: dict) -> dict:
    """The figures of one budget's run that the table and the plot need."""
    keep = ("budget_minutes", "run_s", "steps_done", "steps_per_s", "teacher_knn", "random_init_knn", "pixels_knn",
            "gap_to_pixels", "teacher_minus_random", "warnings", "online_knn")
    baselines = Path(result.get("run_dir") or "") / "baselines.json"  # the online k-NN's own random-init figure
    online_random = json.loads(baselines.read_text())["values"].get("knn_online_random_init") \
        if baselines.is_file() else result.get("online_random_init_knn")
    return {**{k: result.get(k) for k in keep}, "online_random_init_knn": online_random}


def plot(results: dict, out: Path) -> Path:
    """Final teacher k-NN against the budget, and each run's online k-NN against its training step, each beside
    its own protocol's baselines (the online k-NN's random init is scored on its smaller bank and query set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results.values(), key=lambda r: r["budget_minutes"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    left.plot([r["budget_minutes"] for r in rows], [r["teacher_knn"] for r in rows], "o-", label="teacher")
    left.set_xscale("log", base=2)
    left.set_xticks([r["budget_minutes"] for r in rows], [f"{r['budget_minutes']:g}" for r in rows])
    left.set_xlabel("time budget (minutes, the whole command)", fontsize=8)
    left.set_title("final k-NN top-1 (60k bank, 10k queries)", fontsize=9)
    for r in rows:
        online = r.get("online_knn") or []
        if online:
            right.plot([p[0] for p in online], [p[1] for p in online], lw=1.1, label=f"{r['budget_minutes']:g} min")
    right.set_xlabel("step (batch 64)", fontsize=8)
    right.set_title("online k-NN (5k bank, 1k queries)", fontsize=9)
    right.legend(fontsize=7)
    lines = (("raw pixels", "pixels_knn", "--", left), ("random init", "random_init_knn", ":", left),
             ("random init", "online_random_init_knn", ":", right))
    for name, field, style, ax in lines:
        value = next((r[field] for r in rows if r.get(field) is not None), None)
        if value is not None:
            ax.axhline(value, ls=style, c="grey", lw=1)
            ax.text(ax.get_xlim()[0], value + 0.3, f" {name}", fontsize=7, color="grey")
    for ax in (left, right):
        ax.set_ylabel("k-NN top-1 (%)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="*", default=[5, 10, 20, 40],
                   help="the budgets to run (none: only the table and the plot of the JSON's results)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides added to every run")
    p.add_argument("--out", default="runs/learning-curve", help="run directories go under it (replaced)")
    p.add_argument("--json", default="benchmarks/results/learning_curve.json")
    p.add_argument("--plot", default=PLOT, help="the PNG written from every budget in the JSON ('' for none)")
    args = p.parse_args(argv)
    path = Path(args.json)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    failed = 0
    for minutes in args.minutes:
        name = key(minutes)
        run = argparse.Namespace(name=name, busy_after=None, busy_core=0, out=str(Path(args.out) / name),
                                 set=[f"train.budget_minutes={minutes:g}", *args.set])
        result = quickstart.measure(run, ["--name", name, "--set", *run.set])
        failed += result.get("returncode") != 0
        saved[name] = result  # the other budgets' results are kept
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=1) + "\n")
        row = curve_row(result)
        print(f"{name}: " + ", ".join(f"{k} {row[k]}" for k in ("steps_done", "steps_per_s", "teacher_knn",
                                                                  "random_init_knn", "pixels_knn", "gap_to_pixels")),
              flush=True)
    for result in saved.values():  # kept in the JSON, so the plot can be drawn again without the run directories
        result.setdefault("online_random_init_knn", curve_row(result)["online_random_init_knn"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1) + "\n")
    rows = {k: curve_row(v) for k, v in saved.items() if v.get("teacher_knn") is not None}
    print("| budget | steps | steps/s | teacher k-NN | random init | raw pixels | teacher - pixels |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows.values(), key=lambda r: r["budget_minutes"]):
        print(f"| {r['budget_minutes']:g} min | {r['steps_done']} | {r['steps_per_s']} | {r['teacher_knn']:.2f} % | "
              f"{r['random_init_knn']} % | {r['pixels_knn']} % | {r['gap_to_pixels']:+.2f} |")
    if args.plot and rows:
        print(f"plot: {plot(rows, Path(args.plot))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
