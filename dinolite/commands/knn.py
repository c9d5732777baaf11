"""``dinolite knn``: weighted k-NN (k = 10, 20, 100, 200 at once) of a frozen backbone's CLS features.

The train split is the bank, the test split the queries; features are extracted once and cached. An unreadable
image is left out of both (named in a warning and in the JSON): the counts printed are the images scored.
"""

from __future__ import annotations

import argparse
import json

from .args import add_target_args


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..eval.knn import knn_accuracies
    from ..files import write_text
    from .common import features, setup

    s = setup(args)
    model, kind, what = None, "cls", f"{s.key} of {s.spec.source}"
    if args.baseline == "pixels":
        from ..eval.features import RawPixels

        model, kind, what = RawPixels(), "pixels", "raw pixels (the evaluation view, flattened)"
    bank, bank_labels, train = features(s, "train", model, kind, args.bank_subset)
    queries, labels, _ = features(s, "test", model, kind, args.query_subset)
    if not s.is_main:  # the other ranks only helped extract the features
        return 0
    num_classes = max(train.num_classes, int(bank_labels.max()) + 1, int(labels.max()) + 1)
    if args.temperature <= 0:
        raise UserError("--temperature must be > 0")
    acc = knn_accuracies(queries, labels, bank, bank_labels, num_classes, args.k, args.temperature,
                         query_chunk=args.query_chunk, bank_chunk=args.bank_chunk)
    left = {split: s.left_out.get(split, ([], 0)) for split in ("train", "test")}
    dropped = {split: len(bad) + missing for split, (bad, missing) in left.items()}
    note = (f" (left out as unreadable: {dropped['train']} of the bank, {dropped['test']} of the queries)"
            if any(dropped.values()) else "")
    print(f"weighted k-NN, T={args.temperature}, {what}: {len(bank)} bank, {len(queries)} queries{note}")
    print("    k   top-1   top-5")
    for k, a in acc.items():
        print(f"{k:5d}  {a['top1']:6.2f}  {a['top5']:6.2f}")
    if args.json:
        figures = {"source": str(s.spec.source), "checkpoint_key": s.key, "baseline": args.baseline,
                   "temperature": args.temperature, "bank": len(bank), "queries": len(queries),
                   "left_out": {role: {"unreadable": [{"name": n, "reason": r} for n, r in left[split][0]],
                                       "missing": left[split][1]}
                                for role, split in (("bank", "train"), ("queries", "test"))},
                   "knn": {str(k): v for k, v in acc.items()}}
        write_text(args.json, json.dumps(figures, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("knn", help="weighted k-NN accuracy of a pretrained backbone",
                       description="Weighted k-NN (DINO): train split as bank, test split as queries, "
                                   "k = 10, 20, 100, 200 reported together.")
    add_target_args(p)
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200],
                   help="numbers of neighbours, all scored at once (default: DINO's 10 20 100 200)")
    p.add_argument("--temperature", type=float, default=0.07,
                   help="weights exp(cos / T) of the neighbours (DINO: 0.07)")
    p.add_argument("--query-chunk", type=int, default=1024, help="queries per similarity block")
    p.add_argument("--bank-chunk", type=int, default=65536, help="bank items per similarity block")
    p.add_argument("--baseline", choices=["pixels"], default=None,
                   help="score raw pixels instead of the backbone (same images, crop and normalisation): "
                        "the no-learning bar")
    p.add_argument("--bank-subset", type=int, default=0, metavar="N",
                   help="use N training images spread evenly over the split as the bank (the online k-NN's subset)")
    p.add_argument("--query-subset", type=int, default=0, metavar="N",
                   help="use N test images spread evenly over the split as the queries")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)
