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
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from omegaconf import OmegaConf

from ..augment import EvalTransform
from ..config import Config, as_dict, validate
from ..distributed import init_from_env
from ..engine.runtime import resolve_device
from ..errors import UserError
from ..overrides import apply as apply_overrides
from ..overrides import data_items
from ..weights import BackboneSpec, resolve

SECTIONS = ("data", "eval", "augment")  # what --data may set on top of the weights' settings


def eval_config(base: Config | None, items: list[str]) -> Config:
    """``base`` (or the defaults) with ``--data`` items merged, type-checked like any override."""
    cfg = OmegaConf.structured(base if base is not None else Config())
    cfg = apply_overrides(cfg, data_items(items, Config), "--data item", "dinolite/config.py",
                          "root=/data/imagenet", SECTIONS)
    out = cast(Config, OmegaConf.to_object(cfg))
    validate(out)
    return out


@dataclass
class EvalSetup:
    """Weights, config, device, transform and cache folder of one evaluation command."""

    spec: BackboneSpec
    cfg: Config
    device: torch.device
    backbone: torch.nn.Module
    transform: EvalTransform
    cache_dir: Path | None
    progress: bool
    key: str
    is_main: bool = True  # rank 0 (or the only process) prints and writes; every rank extracts features

    def cache_spec(self, split: str, kind: str, n: int) -> dict:
        """Everything besides the weights that determines the features of ``split``."""
        data = as_dict(self.cfg.data)
        data.pop("num_workers", None)
        e, a = self.cfg.eval, self.cfg.augment
        return {"split": split, "kind": kind, "n": n, "data": data, "key": self.key, "image_size": e.image_size,
                "crop_ratio": e.crop_ratio, "mean": list(a.mean), "std": list(a.std)}


def setup(args: argparse.Namespace) -> EvalSetup:
    spec = resolve(args.target, args.checkpoint_key)
    if getattr(args, "pos_interp", "auto") != "auto":
        spec.pos_interp = args.pos_interp
    cfg = eval_config(spec.config, getattr(args, "data", []))
    device = resolve_device(args.device, "--device")
    info = init_from_env(device.type)  # under torchrun/srun the feature extraction is split over the ranks
    backbone = spec.build().to(device)
    in_chans = spec.kwargs.get("in_chans", 3)
    if len(cfg.augment.mean) != in_chans:
        raise UserError(f"the backbone takes {in_chans} channel(s) but augment.mean has {len(cfg.augment.mean)} "
                        f"value(s): pass --data augment.mean=[...] augment.std=[...] with {in_chans} value(s)")
    transform = EvalTransform(cfg.eval.image_size, cfg.eval.crop_ratio, cfg.augment.mean, cfg.augment.std).to(device)
    cache_dir = None
    if not getattr(args, "no_cache", True):
        target = Path(args.target)
        default = (target if target.is_dir() else target.parent) / "features"
        cache_dir = Path(args.cache_dir) if args.cache_dir else default
    progress = not getattr(args, "no_progress", False) and info.is_main
    return EvalSetup(spec, cfg, device, backbone, transform, cache_dir, progress, args.checkpoint_key, info.is_main)


def features(s: EvalSetup, split: str, model: torch.nn.Module | None = None, kind: str = "cls", subset: int = 0):
    """``(features, labels, source)`` of ``split`` through ``model`` (default: the backbone), cached.

    ``subset`` > 0 keeps that many images spread evenly over the split (the online k-NN's subset).
    """
    from ..data import build_source
    from ..eval.cache import cache_path, cached_features
    from ..eval.features import extract_features

    source = build_source(s.cfg.data, split)
    if source.channels != len(s.cfg.augment.mean):
        raise UserError(f"the {split} images have {source.channels} channel(s) but augment.mean has "
                        f"{len(s.cfg.augment.mean)} value(s): set --data augment.mean=[...] augment.std=[...]")
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
        if indices is not None:
            spec["spread_subset"] = len(indices)
        path = cache_path(s.cache_dir, s.spec.fingerprint(), split, spec)

    def compute():
        return extract_features(model or s.backbone, source, s.transform, s.device, batch_size=s.cfg.eval.batch_size,
                                num_workers=s.cfg.data.num_workers, desc=f"{split} features", progress=s.progress,
                                indices=indices)

    feats, labels, hit = cached_features(path, compute, s.device, write=s.is_main)
    if s.progress:
        print(f"{split}: {len(labels)} images, {feats.shape[1]}-dim features "
              f"({'read from' if hit else 'written to'} {path})" if path else f"{split}: {len(labels)} images")
    return feats, labels, source
