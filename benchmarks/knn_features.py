"""Which features of a trained ViT score best under the run's k-NN? The CLS token (the quickstart's), the mean
of the last block's patch tokens, both, and the CLS of the last 2 or 4 blocks (DINO's linear-probe input),
each with and without normalising every part before concatenating. Features are extracted once (the last 4
blocks' CLS and the patch mean, ``ProbeFeatures``); each variant is a slice of them. Prints a table, writes JSON.

    python benchmarks/knn_features.py runs/quickstart-benchmark/idle [--json benchmarks/results/knn_features.json]

The k-NN is the run's own protocol (k and T from its config; its whole training split as the bank, its whole
test split as queries), so the "cls" row equals the run's final line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402


def variants(n_blocks: int) -> dict[str, list[int]]:
    """Variant name -> the parts it concatenates (0 .. n_blocks-1: the blocks' CLS, last block last;
    n_blocks: the patch mean)."""
    cls, avg = list(range(n_blocks)), n_blocks
    return {"cls": [n_blocks - 1], "patch mean": [avg], "cls + patch mean": [n_blocks - 1, avg],
            "cls of last 2 blocks": cls[-2:], "cls of last 2 blocks + patch mean": cls[-2:] + [avg],
            f"cls of last {n_blocks} blocks": cls, f"cls of last {n_blocks} blocks + patch mean": cls + [avg]}


def select(x: torch.Tensor, parts: list[int], dim: int, per_part_norm: bool) -> torch.Tensor:
    pieces = [x[:, i * dim:(i + 1) * dim] for i in parts]
    if per_part_norm:  # each part weighs the same in the cosine, whatever its norm
        pieces = [F.normalize(p, dim=1) for p in pieces]
    return torch.cat(pieces, dim=1)


def main(argv: list[str] | None = None) -> int:
    from dinolite.eval.features import ProbeFeatures, extract_features, open_eval, open_split
    from dinolite.eval.knn import knn_accuracy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a pretraining run directory (its teacher is scored)")
    p.add_argument("--json", default="benchmarks/results/knn_features.json")
    args = p.parse_args(argv)
    s = open_eval(args.run, progress=False)
    train, test = open_split(s, "train"), open_split(s, "test")
    dim, n_blocks = s.backbone.num_features, min(4, len(s.backbone.blocks))
    t0 = time.time()
    probe = ProbeFeatures(s.backbone, n_blocks, avgpool=True).eval()
    bank, bank_y = extract_features(probe, train, s.transform, s.device, s.cfg.eval.batch_size, progress=False)
    queries, query_y = extract_features(probe, test, s.transform, s.device, s.cfg.eval.batch_size, progress=False)
    rows = []
    for name, parts in variants(n_blocks).items():
        for per_part in (False, True) if len(parts) > 1 else (False,):
            top1 = knn_accuracy(select(queries, parts, dim, per_part), query_y, select(bank, parts, dim, per_part),
                                bank_y, train.num_classes, s.cfg.eval.knn_k, s.cfg.eval.knn_temperature)["top1"]
            rows.append({"feature": name, "per_part_norm": per_part, "dim": dim * len(parts), "top1": round(top1, 2)})
            print(f"{name + (' (each part normalised)' if per_part else ''):<58} {top1:6.2f} %", flush=True)
    out = {"run": str(args.run), "seconds": round(time.time() - t0, 1), "bank": len(bank_y), "queries": len(query_y),
           "results": rows, "provenance": provenance(steps_per_s=None)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
