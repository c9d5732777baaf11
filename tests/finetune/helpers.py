"""A tiny backbone file and the overrides that make a fine-tuning run take seconds on real Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from omegaconf import OmegaConf

from dinolite.export import write_safetensors
from dinolite.finetune.config import FinetuneConfig
from dinolite.finetune.recipe import load_finetune_config

TINY_KWARGS = dict(num_classes=0, dynamic_img_size=True, img_size=28, in_chans=1, patch_size=7, embed_dim=32,
                   depth=4, num_heads=2)


def write_tiny_backbone(path: Path, seed: int = 0, **changes) -> Path:
    """A random 4-block ViT (width 32, patch 7, 1 channel) stored like a run's teacher_backbone.safetensors."""
    kwargs = {**TINY_KWARGS, **changes}
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    meta = {"arch": "vit_tiny_patch16_224", "timm_kwargs": OmegaConf.to_yaml(OmegaConf.create(kwargs))}
    write_safetensors(model.state_dict(), path, meta)
    return path


def ft_overrides(run_dir: Path, init: Path | str, method: str = "supervised", **extra) -> list[str]:
    """512 training / 256 test images, batch 64: 8 steps per epoch, 1 epoch."""
    values = {
        "method": method,
        "init": str(init),
        "train.output_dir": str(run_dir),
        "data.subset": 512,
        "data.test_subset": 256,
        "augment.mean": "[0.286]",
        "augment.std": "[0.353]",
        "optim.batch_size": 64,
        "optim.epochs": 1,
        "optim.warmup_epochs": 0.25,
        "train.log_every": 2,
        "eval.batch_size": 256,
        "born_again.generations": 2,
        "train.threads": 1,  # tiny matrices: one thread is faster, and kinder to a shared machine
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def ft_config(run_dir: Path, init: Path | str, method: str = "supervised", **extra) -> FinetuneConfig:
    return load_finetune_config("finetune_fmnist", ft_overrides(run_dir, init, method, **extra))
