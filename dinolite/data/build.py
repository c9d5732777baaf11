"""Build the configured source for a split, and the training loader that fits it."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .base import ImageSource


def build_source(cfg: DataConfig, split: str = "train") -> ImageSource:
    """``split`` is "train" (pretraining and the k-NN bank) or "test" (k-NN queries).

    With ``data.source=shards`` this is a :class:`~dinolite.data.shards.ShardSet` (streamed, not
    indexable); :func:`build_loader` and :func:`~dinolite.data.loader.eval_batches` accept both kinds.
    """
    subset = cfg.subset if split == "train" else cfg.test_subset
    if cfg.source == "shards":
        from .shards import build_shard_set

        return build_shard_set(cfg, split)
    if cfg.source == "fashion_mnist":
        from .fashion_mnist import FashionMNIST

        return FashionMNIST(cfg.root, split=split, subset=subset)
    from .folder import ImageFolder

    folder = cfg.train_dir if split == "train" else cfg.val_dir
    return ImageFolder(str(Path(cfg.root) / folder), size=cfg.decode_size, subset=subset)


def build_loader(source, batch_size: int, seed: int, num_workers: int = 0, rank: int = 0, world: int = 1,
                 pin_memory: bool = False):
    """A ``BatchLoader`` for indexable sources, a streaming ``ShardLoader`` for shards; same interface."""
    from .loader import BatchLoader
    from .shards import ShardLoader, ShardSet

    kind = ShardLoader if isinstance(source, ShardSet) else BatchLoader
    return kind(source, batch_size, seed, num_workers, rank, world, pin_memory=pin_memory)
