"""Build the configured source for a split."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .base import ImageSource


def build_source(cfg: DataConfig, split: str = "train") -> ImageSource:
    """``split`` is "train" (pretraining and the k-NN bank) or "test" (k-NN queries)."""
    subset = cfg.subset if split == "train" else cfg.test_subset
    if cfg.source == "fashion_mnist":
        from .fashion_mnist import FashionMNIST

        return FashionMNIST(cfg.root, split=split, subset=subset)
    from .folder import ImageFolder

    folder = cfg.train_dir if split == "train" else cfg.val_dir
    return ImageFolder(str(Path(cfg.root) / folder), size=cfg.decode_size, subset=subset)
