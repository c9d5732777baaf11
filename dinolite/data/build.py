"""Build the configured source for a split, and the training loader that fits it."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from ..config import DataConfig
from .base import ImageSource, Source, TrainLoader


def build_source(cfg: DataConfig, split: str = "train") -> Source:
    """``split`` is "train" (pretraining and the k-NN bank) or "test" (k-NN queries).

    An indexable :class:`~dinolite.data.base.ImageSource` (image folder, Fashion-MNIST), or with
    ``data.source=shards`` a streamed :class:`~dinolite.data.shards.ShardSet`; :func:`build_loader`
    and :func:`~dinolite.data.loader.eval_batches` accept both kinds.
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


def build_loader(source: Source, batch_size: int, seed: int, num_workers: int = 0, rank: int = 0, world: int = 1,
                 pin_memory: bool = False) -> TrainLoader:
    """A ``BatchLoader`` for indexable sources, a streaming ``ShardLoader`` for shards: the same
    ``(images, hw, labels)`` batches, split by rank, in a seeded order that resumes mid-epoch."""
    from .loader import BatchLoader
    from .shards import ShardLoader, ShardSet

    if isinstance(source, ShardSet):
        return ShardLoader(source, batch_size, seed, num_workers, rank, world, pin_memory=pin_memory)
    return BatchLoader(cast(ImageSource, source), batch_size, seed, num_workers, rank, world, pin_memory=pin_memory)
