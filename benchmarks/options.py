"""The dinov2-era options and a small ResNet, each measured on the learning benchmark's datasets.

Every variant is the quickstart recipe with a few overrides, trained for the same number of images
(``--images``, steps x batch) on every dataset; for each run: the teacher's k-NN beside the same
network at random initialisation and raw pixels, the final teacher entropy / KL, the monitor's
warnings. Prints a markdown table and writes JSON.

    pip install --no-deps animal-shape-mnist            # once (see learning_data.py)
    python benchmarks/options.py [--images 51200] [--parallel 2] [--only dino ibot] [--datasets fashion-mnist]

The runs' own steps/s depend on what else runs beside them (``--parallel 2`` runs two at a time with one
thread each); the cost of each option in images/s on an idle machine comes from
``benchmarks/pretrain_throughput.py --parts c --set ...`` (docs/learning.md gives both).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import NAMES, datasets, one_run  # noqa: E402

VIT_ONLY_OFF = ["model.patch_size=null", "model.embed_dim=null", "model.num_heads=null", "model.depth=null"]

# Every variant sets all three options, so it means the same whatever the quickstart recipe has on
# (the table in docs/learning.md was measured when the recipe had KoLeo alone; it now has all three).
PLAIN = ["loss.centering=center", "loss.koleo_weight=0", "loss.ibot_weight=0"]
VARIANTS: dict[str, list[str]] = {
    "dino": PLAIN,
    "+sinkhorn-knopp": [*PLAIN, "loss.centering=sinkhorn_knopp"],
    "+koleo": [*PLAIN, "loss.koleo_weight=0.1"],
    "+ibot": [*PLAIN, "loss.ibot_weight=1.0"],
    "all (sk + koleo + ibot)": ["loss.centering=sinkhorn_knopp", "loss.koleo_weight=0.1", "loss.ibot_weight=1.0"],
    "resnet10t (+koleo)": ["model.arch=resnet10t", *VIT_ONLY_OFF, *PLAIN, "loss.koleo_weight=0.1"],
}


def table(results: list[dict]) -> str:
    lines = ["| variant | dataset | teacher k-NN | random init | raw pixels | teacher - random | final H / log K | final KL | warnings |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['dataset']} | error: {r['error']} ||||||")
            continue
        warn = "; ".join(w.split(":")[0] for w in r["collapse_warnings"]) or "none"
        lines.append(f"| {r['variant']} | {r['dataset']} | {r['teacher_knn']:.2f} % | {r['random_init_knn']:.2f} % "
                     f"| {r['pixels_knn']:.2f} % | {r['teacher_minus_random']:+.2f} "
                     f"| {r['final_entropy']:.2f} / {r['max_entropy']:.2f} | {r['final_kl_uniform']:.2f} | {warn} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=51200, help="images seen by every run (steps x batch)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--parallel", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: 1 when parallel, else default)")
    p.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    p.add_argument("--datasets", nargs="*", default=["fashion-mnist", "animal-shape"])
    p.add_argument("--out", default="runs/options-benchmark", help="folder of the runs and the prepared data")
    p.add_argument("--json", default="benchmarks/results/options.json")
    args = p.parse_args(argv)
    args.threads = args.threads or (1 if args.parallel > 1 else 0)
    out = Path(args.out)
    unknown = [d for d in args.datasets if d not in NAMES] + [v for v in args.only or [] if v not in VARIANTS]
    if unknown:
        p.error(f"unknown dataset or variant: {unknown}; datasets: {NAMES}; variants: {list(VARIANTS)}")
    data = datasets(out / "data", args.datasets)  # prepares the folders of the chosen datasets (once)
    jobs = [(v, d) for v in VARIANTS if not args.only or v in args.only for d in args.datasets]

    def run(job: tuple[str, str]) -> dict:
        variant, name = job
        run_args = argparse.Namespace(images=args.images, batch=args.batch, threads=args.threads, set=VARIANTS[variant])
        folder = out / variant.split(" ")[0].strip("+")
        folder.mkdir(parents=True, exist_ok=True)
        return {"variant": variant, "overrides": VARIANTS[variant], **one_run(name, data[name], run_args, folder)}

    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(run, jobs))
    path = Path(args.json)
    if path.is_file() and (args.only or set(args.datasets) != {"fashion-mnist", "animal-shape"}):
        done = {(r["variant"], r["dataset"]) for r in results}  # a partial rerun replaces its rows, keeps the others
        kept = [r for r in json.loads(path.read_text())["results"] if (r["variant"], r["dataset"]) not in done]
        order = list(VARIANTS)
        results = sorted(kept + results, key=lambda r: (order.index(r["variant"]) if r["variant"] in order else 99,
                                                        r["dataset"]))
    print(table(results))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": args.images, "batch": args.batch, "parallel": args.parallel,
                                "threads": args.threads, "recipe": "quickstart", "results": results}, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
