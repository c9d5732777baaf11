"""CLS features of a frozen backbone over a whole image source, and what every command that extracts them
shares: the weights, the data and evaluation-view settings (``--data``), the device and the transform
(:func:`open_eval`), the split's source (:func:`open_split`), one batch's features (:func:`batch_features`)
and each rank's share of a split (:func:`rank_rows`). ``dinolite knn``, ``dinolite linear`` and
``dinolite embed`` all go through these, so the same weights and data give the same features in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from ..config import Config, as_dict, validate
from ..data import Source, eval_rows
from ..errors import UserError
from ..maths.augment import EvalTransform
from ..overrides import apply as apply_overrides
from ..overrides import data_items
from ..weights import BackboneSpec

SECTIONS = ("data", "eval", "augment")  # what --data may set on top of the weights' settings


def eval_config(base: Config | None, items: Sequence[str]) -> Config:
    """``base`` (or the defaults) with ``--data`` items merged, type-checked like any override."""
    cfg = OmegaConf.structured(base if base is not None else Config())
    cfg = apply_overrides(cfg, data_items(list(items), Config), "--data item", "dinolite/config.py",
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
    # split -> (file or key, reason) of each image left out as unreadable, and the samples missing from damaged
    # shards, of the features last extracted for that split (``commands.common.features``)
    left_out: dict[str, tuple[list[tuple[str, str]], int]] = field(default_factory=dict)

    def cache_spec(self, split: str, kind: str, n: int) -> dict:
        """Everything besides the weights that determines the features of ``split``."""
        data = as_dict(self.cfg.data)
        data.pop("num_workers", None)
        e, a = self.cfg.eval, self.cfg.augment
        return {"split": split, "kind": kind, "n": n, "data": data, "key": self.key, "image_size": e.image_size,
                "crop_ratio": e.crop_ratio, "mean": list(a.mean), "std": list(a.std)}


def open_eval(target: str | Path, checkpoint_key: str = "teacher", items: Sequence[str] = (), device: str = "auto",
              pos_interp: str = "auto", progress: bool = True, cache_dir: Path | None = None) -> EvalSetup:
    """The backbone of ``target`` (anything ``dinolite.weights.resolve`` reads) on ``device``, with its run's data
    and evaluation view under the ``--data`` ``items``. Under torchrun/srun it joins the process group, so the
    feature extraction can be split over the ranks. Bad weights, items or devices raise a one-line UserError
    before anything is computed."""
    from ..distributed import init_from_env
    from ..engine.runtime import resolve_device
    from ..weights import resolve

    spec = resolve(target, checkpoint_key)
    if pos_interp != "auto":
        spec.pos_interp = pos_interp
    cfg = eval_config(spec.config, items)
    dev = resolve_device(device, "--device")
    info = init_from_env(dev.type)
    backbone = spec.build().to(dev)
    in_chans = spec.kwargs.get("in_chans", 3)
    if len(cfg.augment.mean) != in_chans:
        raise UserError(f"the backbone takes {in_chans} channel(s) but augment.mean has {len(cfg.augment.mean)} "
                        f"value(s): pass --data augment.mean=[...] augment.std=[...] with {in_chans} value(s)")
    transform = EvalTransform(cfg.eval.image_size, cfg.eval.crop_ratio, cfg.augment.mean, cfg.augment.std).to(dev)
    return EvalSetup(spec, cfg, dev, backbone, transform, cache_dir, progress and info.is_main, checkpoint_key,
                     info.is_main)


def open_split(s: EvalSetup, split: str) -> Source:
    """The configured source of ``split`` ("train" or "test"), checked against the normalisation's channels."""
    from ..data import build_source

    source = build_source(s.cfg.data, split)
    if source.channels != len(s.cfg.augment.mean):
        raise UserError(f"the {split} images have {source.channels} channel(s) but augment.mean has "
                        f"{len(s.cfg.augment.mean)} value(s): set --data augment.mean=[...] augment.std=[...]")
    return source


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_rows(n: int, rank: int, world: int, align: int = 1) -> tuple[range, int]:
    """Rank ``rank``'s contiguous share of ``n`` rows and the share size (the last rank's may be shorter).

    With ``align`` = the batch size every share but the last is whole batches, so each rank's batches are
    exactly the batches one process would make (the same images together, hence the same features).
    """
    batches = -(-n // align)
    chunk = -(-batches // world) * align
    return range(min(rank * chunk, n), min((rank + 1) * chunk, n)), chunk


@torch.no_grad()
def batch_features(backbone: nn.Module, transform: EvalTransform, images: Tensor, hw: Tensor,
                   device: torch.device) -> Tensor:
    """float32 features ``[B, D]`` of one ``(images, hw)`` batch: the evaluation view, then the backbone
    (bf16 autocast on CUDA). The one forward of every feature extraction."""
    x = transform(images.to(device, non_blocking=True), hw)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return backbone(x).float()


def _gather_rows(part: Tensor, chunk: int) -> Tensor:
    """Every rank's ``part`` (at most ``chunk`` rows; fewer where unreadable images were left out), concatenated
    in rank order on every rank. ``all_gather`` wants equal shapes: parts are padded to ``chunk`` rows and each
    trimmed to its rank's count after."""
    world = dist.get_world_size()
    n = torch.tensor([len(part)], dtype=torch.int64, device=part.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    padded = part.new_zeros((chunk, *part.shape[1:]))
    padded[:len(part)] = part
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:int(c.item())] for o, c in zip(out, counts, strict=True)])


@dataclass
class Extracted:
    """The features of a source's readable images, and what was left out: each row is its own image."""

    features: Tensor  # float32 [N, D], N = the images scored
    labels: Tensor  # int64 [N]
    unreadable: list[tuple[str, str]]  # (file or shard key, reason) of each image left out, in source order
    missing: int = 0  # samples a damaged shard no longer holds (left out; they have no name)

    @property
    def left_out(self) -> int:
        return len(self.unreadable) + self.missing


@torch.no_grad()
def extract_rows(backbone: nn.Module, source: Source, transform: EvalTransform, device: torch.device,
                 batch_size: int = 256, num_workers: int = 0, desc: str = "features", progress: bool = True,
                 indices: range | list[int] | None = None) -> Extracted:
    """The features and labels of the readable images of ``source`` (or of ``indices``), in the source's order;
    an unreadable image is left out and listed, never replaced by another (see ``dinolite.data.eval_rows``).

    Under torch.distributed every rank extracts a contiguous share of an indexable source and gets the whole
    result back, the ranks' parts joined in rank order (every rank must call this). A streamed shard set is read
    whole by every rank. Given ``indices`` (a fixed subset, e.g. the online k-NN's), every rank reads just
    those, on its own, with no collective.
    """
    rank, world = rank_and_world()
    split = indices is None and world > 1 and hasattr(source, "__getitem__") and hasattr(source, "__len__")
    if split:
        indices, chunk = rank_rows(len(source), rank, world)
    was_training = backbone.training
    backbone.eval()
    feats, labels, bad, missing = [], [], [], 0
    rows = eval_rows(source, batch_size, num_workers, pin_memory=device.type == "cuda", indices=indices)
    count = len(indices) if indices is not None else len(source)  # shard sets know their size from the manifest
    total = -(-count // batch_size)
    for b in tqdm(rows, desc=desc, total=total, disable=not progress or rank > 0, leave=False):
        bad += b.bad
        missing += b.missing
        if len(b.labels):
            feats.append(batch_features(backbone, transform, b.images, b.hw, device))
            labels.append(b.labels.to(device))
    backbone.train(was_training)
    dim = feats[0].shape[1] if feats else getattr(backbone, "dim", getattr(backbone, "num_features", 0))
    mine_f = torch.cat(feats) if feats else torch.zeros(0, dim, device=device)
    mine_y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    if not split:
        return Extracted(mine_f, mine_y, bad, missing)
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (bad, missing))
    return Extracted(_gather_rows(mine_f, chunk), _gather_rows(mine_y, chunk),
                     [b for part_bad, _ in parts for b in part_bad], sum(m for _, m in parts))


def extract_features(backbone: nn.Module, source: Source, transform: EvalTransform, device: torch.device,
                     batch_size: int = 256, num_workers: int = 0, desc: str = "features",
                     progress: bool = True, indices: range | list[int] | None = None) -> tuple[Tensor, Tensor]:
    """``(features [N, D] float32, labels [N])`` of the readable images, on ``device``: :func:`extract_rows`
    without the list of what was left out."""
    got = extract_rows(backbone, source, transform, device, batch_size, num_workers, desc, progress, indices)
    return got.features, got.labels


def left_out_line(split: str, unreadable: list[tuple[str, str]], missing: int, scored: int) -> str:
    """What an evaluation left out of ``split``: the count, the first few names, and how many it scored."""
    parts = []
    if unreadable:
        shown = ", ".join(name for name, _ in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
        parts.append(f"{len(unreadable)} unreadable image(s) ({shown})")
    if missing:
        parts.append(f"{missing} sample(s) missing from damaged shards")
    return (f"left out {' and '.join(parts)} of the {split} split; scored the {scored} readable one(s), "
            f"each row its own image")


class ProbeFeatures(nn.Module):
    """The linear-probe input of DINO's protocol: for a ViT, the (normalised) CLS token of each of the
    last ``n_blocks`` blocks, concatenated, optionally followed by the average of the last block's patch
    tokens (DINO: n = 4 without pooling for ViT-S, n = 1 with pooling for ViT-B); for a CNN, its globally
    pooled features (DINO's ResNet-50 protocol), ``n_blocks`` and ``avgpool`` not applying."""

    backbone: Any  # a timm model (blocks, num_features, forward_intermediates are timm's attributes)

    def __init__(self, backbone: nn.Module, n_blocks: int | None = None, avgpool: bool = False):
        super().__init__()
        from ..maths.models import is_vit_backbone

        self.backbone = backbone
        self.vit = is_vit_backbone(backbone)
        depth = len(self.backbone.blocks) if self.vit else 0
        n_blocks = min(4, depth) if n_blocks is None else n_blocks  # DINO's ViT-S choice, capped by the depth
        if self.vit and not 1 <= n_blocks <= depth:
            from ..errors import UserError

            raise UserError(f"--n-blocks must be between 1 and the backbone's depth ({depth}), not {n_blocks}")
        self.n_blocks, self.avgpool = n_blocks, avgpool

    @property
    def dim(self) -> int:
        if not self.vit:
            return self.backbone.num_features
        return self.backbone.num_features * (self.n_blocks + int(self.avgpool))

    @property
    def description(self) -> str:
        if not self.vit:
            return "pooled features"
        return f"CLS of last {self.n_blocks} block(s){' + avg patch' if self.avgpool else ''}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.vit:
            return self.backbone(x)
        outs = self.backbone.forward_intermediates(x, indices=self.n_blocks, norm=True, output_fmt="NLC",
                                                   intermediates_only=True, return_prefix_tokens=True)
        feats = [prefix[:, 0] for _, prefix in outs]
        if self.avgpool:
            feats.append(outs[-1][0].mean(dim=1))
        return torch.cat(feats, dim=1)


class RawPixels(nn.Module):
    """The "no learning at all" baseline: the evaluation view's normalised pixels, flattened, as features."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)
