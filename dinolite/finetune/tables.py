"""Results tables of a fine-tuning run, from the test logits of its models: rows as JSON and Markdown.

Every figure is computed here from the saved per-model / per-exit logits and the test labels, so a
finished run's tables can always be rebuilt from its files.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from ..files import write_text
from .metrics import accuracy, early_exit_figures, ensemble_probs


def single_rows(logits: list[Tensor], labels: Tensor, depth: int, note: str = "") -> list[dict]:
    where = f"block {depth}/{depth}" if depth else "pooled features"
    return [{"model": f"final classifier ({where})", "top1": accuracy(logits[-1], labels), "note": note}]


def born_again_rows(generations: list[list[Tensor]], labels: Tensor, teacher_note: str = "") -> list[dict]:
    """Each generation's final classifier, then the ensembles of generations 0..k (averaged probabilities)."""
    rows = []
    for k, logits in enumerate(generations):
        note = teacher_note if k == 0 else f"student of generation {k - 1}"
        rows.append({"model": f"generation {k}", "top1": accuracy(logits[-1], labels), "note": note})
    for k in range(1, len(generations)):
        probs = ensemble_probs([g[-1] for g in generations[:k + 1]])
        rows.append({"model": f"ensemble of generations 0-{k}", "top1": accuracy(probs, labels),
                     "note": "averaged probabilities"})
    return rows


def layerwise_rows(logits: list[Tensor], labels: Tensor, depths: list[int], thresholds: list[float]) -> list[dict]:
    """Each exit, the ensemble of all exits, and early exit at each confidence threshold."""
    total = depths[-1]
    rows = [{"model": f"exit after block {d}/{total}" if d < total else f"final classifier (block {total}/{total})",
             "top1": accuracy(z, labels), "note": ""} for z, d in zip(logits, depths, strict=True)]
    rows.append({"model": f"ensemble of the {len(logits)} exits", "top1": accuracy(ensemble_probs(logits), labels),
                 "note": "averaged probabilities"})
    for t in thresholds:
        f = early_exit_figures(logits, labels, depths, t)
        note = (f"average depth {f['avg_depth']:.2f} of {total} blocks "
                f"({100 * f['depth_fraction']:.0f} % of the compute of the blocks)")
        rows.append({"model": f"early exit, confidence >= {t:g}", "top1": f["top1"], "avg_depth": f["avg_depth"],
                     "note": note})
    return rows


def markdown(results: dict) -> str:
    head = (f"# dinolite finetune --method {results['method']}\n\n"
            f"init `{results['init']}`, {results['train_images']} training / {results['test_images']} test images, "
            f"{results['epochs']} epoch(s) = {results['steps_per_model']} optimisation steps per model "
            f"(batch {results['global_batch']}); {results['models_trained']} model(s) trained, "
            f"{results['total_steps']} steps in all.\n\n")
    lines = ["| model | test top-1 (%) | note |", "| --- | ---: | --- |"]
    lines += [f"| {r['model']} | {r['top1']:.2f} | {r['note']} |" for r in results["rows"]]
    return head + "\n".join(lines) + "\n"




def write_tables(run_dir: Path, results: dict) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` in the run directory, each written atomically."""
    md, js = Path(run_dir) / "results.md", Path(run_dir) / "results.json"
    write_text(js, json.dumps(results, indent=2) + "\n")
    write_text(md, markdown(results))
    return md, js
