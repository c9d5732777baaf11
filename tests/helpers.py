"""Test helpers: a tiny recipe on a Fashion-MNIST subset (real data, CPU-sized model)."""

from __future__ import annotations

from pathlib import Path

from dinolite.config import Config, load_config

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def tiny_overrides(run_dir: Path, **extra) -> list[str]:
    """Overrides that turn the quickstart into a seconds-long run on 128 real images."""
    values = {
        "train.output_dir": str(run_dir),
        "data.subset": 128,
        "data.test_subset": 64,
        "model.patch_size": 7,
        "model.embed_dim": 32,
        "model.depth": 2,
        "model.num_heads": 2,
        "model.out_dim": 64,
        "model.hidden_dim": 64,
        "model.bottleneck_dim": 16,
        "model.drop_path_rate": 0.1,
        "augment.local_crops_number": 2,
        "augment.local_crops_size": 14,
        "optim.batch_size": 32,
        "optim.epochs": 2,
        "train.budget_minutes": 0,  # the quickstart's 10-minute budget would replace optim.epochs
        "eval.online_every": 0,
        "eval.knn_pixels": False,
        "optim.warmup_epochs": 1,
        "train.log_every": 1,
        "eval.knn_random_init": False,
        "eval.batch_size": 64,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(run_dir: Path, **extra) -> Config:
    return load_config("quickstart", tiny_overrides(run_dir, **extra))
