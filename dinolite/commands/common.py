"""What the evaluation commands share: which weights, which data, which device, where the cache is.

``--data`` takes items on top of the data/eval settings the weights came with (the run's config.yaml,
or the export's JSON; the dataclass defaults for an official DINO checkpoint), in the grammar every
command shares (``dinolite.overrides``): a bare key is a ``data.`` key (``--data root=/x source=folder``),
``eval.*`` and ``augment.*`` keys are accepted too (``--data eval.image_size=224``), and so are the source
shortcuts (``fashion_mnist[:ROOT]``, a shard directory, an image folder root). The sources come from
``dinolite.data.build_source``, so every data source the pretraining reads works here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..errors import UserError
from ..eval.features import EvalSetup, open_eval, open_split
from ..eval.features import eval_config as eval_config  # re-exported: callers and tests read --data items here


def setup(args: argparse.Namespace) -> EvalSetup:
    """``open_eval`` of the command's target, ``--data`` items, device and options, plus the feature cache folder."""
    cache_dir = None
    if not getattr(args, "no_cache", True):
        target = Path(args.target)
        default = (target if target.is_dir() else target.parent) / "features"
        cache_dir = Path(args.cache_dir) if args.cache_dir else default
    return open_eval(args.target, args.checkpoint_key, getattr(args, "data", []), args.device,
                     getattr(args, "pos_interp", "auto"), not getattr(args, "no_progress", False), cache_dir)


def features(s: EvalSetup, split: str, model: torch.nn.Module | None = None, kind: str = "cls", subset: int = 0):
    """``(features, labels, source)`` of ``split`` through ``model`` (default: the backbone), cached.

    ``subset`` > 0 keeps that many images spread evenly over the split (the online k-NN's subset).
    """
    from ..eval.cache import cache_path, cached_features
    from ..eval.features import extract_rows, left_out_line

    source = open_split(s, split)
    indices = None
    if subset:
        if not hasattr(source, "__getitem__"):
            raise UserError(f"--bank-subset/--query-subset need an indexable source, not {s.cfg.data.source}: "
                            f"write fewer samples with 'dinolite shards --subset N' instead")
        from ..eval.online import spread_indices

        indices = spread_indices(len(source), subset)
    path = None
    if s.cache_dir is not None:
        try:
            n = len(source) if indices is None else len(indices)
        except TypeError:  # a streamed source without a length: its config already names it
            n = -1
        spec = s.cache_spec(split, kind, n)
        spec["rows"] = "readable"  # unreadable images left out (older caches held a stand-in row for each)
        if indices is not None:
            spec["spread_subset"] = len(indices)
        path = cache_path(s.cache_dir, s.spec.fingerprint(), split, spec)

    def compute():
        return extract_rows(model or s.backbone, source, s.transform, s.device, batch_size=s.cfg.eval.batch_size,
                            num_workers=s.cfg.data.num_workers, desc=f"{split} features", progress=s.progress,
                            indices=indices)

    got, hit = cached_features(path, compute, s.device, write=s.is_main)
    s.left_out[split] = (got.unreadable, got.missing)
    if s.progress:
        print(f"{split}: {len(got.labels)} images, {got.features.shape[1]}-dim features "
              f"({'read from' if hit else 'written to'} {path})" if path else f"{split}: {len(got.labels)} images")
    if s.is_main and got.left_out:
        print(f"warning: {left_out_line(split, got.unreadable, got.missing, len(got.labels))}", file=sys.stderr,
              flush=True)
    return got.features, got.labels, source

