"""``dinolite linear``: linear probe of a frozen backbone (DINO protocol, or a fast LR sweep)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import add_target_args


def _multi_process() -> bool:
    from ..distributed import read_rendezvous

    return read_rendezvous().world > 1


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..eval.features import ProbeFeatures
    from ..eval.linear import FAST_LRS, ProbeTrainTransform, train_protocol, train_sweep
    from ..export import write_safetensors
    from ..files import write_text
    from .common import features, setup

    if args.mode == "protocol" and _multi_process():
        raise UserError("--mode protocol trains on one process; under torchrun or srun use --mode fast "
                        "(its features are extracted by all ranks)")
    s = setup(args)
    probe = ProbeFeatures(s.backbone, args.n_blocks, args.avgpool).to(s.device)
    if s.is_main:
        how = ("DINO's protocol: the classifier trains on random crops for every epoch (slow; --mode fast sweeps "
               "learning rates on cached features in minutes)" if args.mode == "protocol"
               else "fast: a learning-rate sweep on cached features, picked on a held-out part of train")
        print(f"linear probe on the {probe.description} ({probe.dim} dims) of {s.spec.arch}; {how}", flush=True)
    args.n_blocks = probe.n_blocks
    kind = f"probe-n{args.n_blocks}-avg{int(args.avgpool)}" if probe.vit else "probe-pooled"
    test_x, test_y, _ = features(s, "test", probe, kind)
    meta = {"mode": args.mode, "n_blocks": args.n_blocks, "avgpool": args.avgpool, "source": str(s.spec.source),
            "checkpoint_key": s.key, "feature_dim": probe.dim, "epochs": args.epochs}
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be >= 1")
    if args.mode == "fast":
        train_x, train_y, train = features(s, "train", probe, kind)
        if not s.is_main:  # the other ranks only helped extract the features
            return 0
        num_classes = max(train.num_classes, int(train_y.max()) + 1)
        res = train_sweep(train_x, train_y, test_x, test_y, num_classes, args.lrs or FAST_LRS, args.epochs,
                          args.batch_size, args.holdout, args.seed, s.progress)
        print("lr         held-out top-1")
        for lr, acc in zip(res.lrs, res.holdout_top1, strict=True):
            print(f"{lr:<10g} {acc:6.2f}{'   <- picked' if lr == res.lrs[res.best] else ''}")
        meta.update(lr=res.lrs[res.best], holdout=args.holdout, holdout_top1=res.holdout_top1[res.best],
                    sweep=dict(zip(map(str, res.lrs), res.holdout_top1, strict=True)))
        clf, test = res.classifier, res.test
    else:
        from ..data import build_source

        train = build_source(s.cfg.data, "train")
        view = ProbeTrainTransform(s.cfg.eval.image_size, s.cfg.augment.mean, s.cfg.augment.std,
                                   args.crop_scale).to(s.device)
        num_classes = max(train.num_classes, int(test_y.max()) + 1)  # streamed shards list no labels up front
        protocol = train_protocol(probe, probe.dim, train, view, test_x, test_y, num_classes, s.device, args.epochs,
                             args.batch_size, args.base_lr, args.seed, s.cfg.data.num_workers, s.progress)
        meta.update(lr=args.base_lr * args.batch_size / 256, base_lr=args.base_lr, crop_scale=list(args.crop_scale))
        clf, test = protocol.classifier, protocol.test
    meta["test"] = test
    target = Path(args.target)
    default = (target if target.is_dir() else target.parent) / f"linear_{args.mode}.safetensors"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(clf.state_dict(), out, {"dinolite_linear": json.dumps(meta)})
    write_text(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    print(f"linear probe ({args.mode}, {probe.description}): "
          f"top-1 {test['top1']:.2f} %, top-5 {test['top5']:.2f} %; classifier saved to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("linear", help="linear probe of a pretrained backbone",
                       description="DINO's linear probe on frozen features (--mode protocol), or a fast sweep of "
                                   "learning rates on cached features picked on a held-out part of train "
                                   "(--mode fast).")
    add_target_args(p)
    p.add_argument("--mode", choices=["protocol", "fast"], default="protocol",
                   help="protocol (default): DINO's probe, random crops each epoch (slow); fast: an LR sweep on "
                        "cached features, picked on a held-out part of train (minutes)")
    p.add_argument("--n-blocks", type=int, default=None,
                   help="default min(4, depth). ViT: CLS tokens of the last n blocks (DINO: 4 for ViT-S, 1 for "
                        "ViT-B); CNNs use their pooled features")
    p.add_argument("--avgpool", action="store_true", help="append the average patch token (DINO: ViT-B)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs of the classifier (DINO: 100)")
    p.add_argument("--batch-size", type=int, default=1024, help="classifier batch size (DINO: 1024)")
    p.add_argument("--base-lr", type=float, default=0.001, help="protocol: lr = base_lr x batch / 256")
    p.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], help="protocol: RandomResizedCrop scale")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="fast: learning rates to sweep")
    p.add_argument("--holdout", type=float, default=0.1, help="fast: fraction of train held out to pick the lr")
    p.add_argument("--seed", type=int, default=0, help="seed of the classifier's init and data order")
    p.add_argument("--out", default=None, help="classifier file (default: <run>/linear_<mode>.safetensors)")
    p.set_defaults(func=run)
