"""A fine-tuning recipe loaded and checked: defaults <- YAML <- overrides (the schema: config.py), then every
key's range and each method's own checks. Above the methods' registry, so the schema imports no method."""

from __future__ import annotations

from typing import cast

from omegaconf import OmegaConf

from ..checks import at_least, data_checks, finite, positive, probability, train_checks
from ..config import merge_recipe, recipe_path
from ..errors import UserError
from .config import DEFAULT_RECIPE, FinetuneConfig
from .methods.registry import METHODS


def load_finetune_config(config: str | None = None, overrides: list[str] | None = None) -> FinetuneConfig:
    """Defaults <- recipe YAML <- ``key=value`` overrides, type-checked and validated."""
    cfg = merge_recipe(FinetuneConfig, recipe_path(config or DEFAULT_RECIPE), overrides,
                       "dinolite/finetune/config.py (train.*: EngineConfig in dinolite/config.py)")
    if not cfg.train.output_dir:
        cfg.train.output_dir = f"runs/{cfg.recipe}-{cfg.method}"
    out = cast(FinetuneConfig, OmegaConf.to_object(cfg))
    validate_finetune(out)
    return out


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Checks that types cannot express; each message names the key and the fix. Each method checks its own
    section (``FinetuneMethod.checks``), all of them whichever method is chosen."""
    a, o = cfg.augment, cfg.optim
    checks = [
        (cfg.method in METHODS, f"method must be one of {', '.join(METHODS)} (--method)"),
        (bool(cfg.init.strip()), "no initial weights: pass --init RUN_DIR, CHECKPOINT, EXPORT or timm:NAME"),
        *data_checks(cfg.data),
        (cfg.data.source != "shards" or bool(cfg.data.eval_shards),
         "data.source=shards needs data.eval_shards (the test split's shards)"),
        (a.image_size >= 0, "augment.image_size must be >= 0 (0 = the backbone's size)"),
        (len(a.scale) == 2 and 0 < a.scale[0] <= a.scale[1] <= 1,
         "augment.scale must be [low, high] with 0 < low <= high <= 1"),
        probability("augment.flip_p", a.flip_p),
        probability("augment.jitter_p", a.jitter_p),
        *[at_least(f"augment.{k}", getattr(a, k), 0) for k in ("brightness", "contrast", "saturation")],
        (len(a.mean) == len(a.std) and len(a.mean) in (0, 1, 3),
         "augment.mean/std must both have 0 (default), 1 or 3 values"),
        (all(s > 0 for s in a.std), "augment.std values must be > 0"),
        (0 < a.crop_ratio <= 1, "augment.crop_ratio must be in (0, 1]"),
        (o.epochs >= 1 and o.batch_size >= 1, "optim.epochs and optim.batch_size must be >= 1"),
        positive("optim.lr", o.lr),
        at_least("optim.min_lr", o.min_lr, 0),
        at_least("optim.warmup_epochs", o.warmup_epochs, 0),
        at_least("optim.weight_decay", o.weight_decay, 0),
        at_least("optim.clip_grad", o.clip_grad, 0, " (0 = no clipping)"),
        (finite(cfg.model.drop_path_rate) and 0 <= cfg.model.drop_path_rate < 1,
         "model.drop_path_rate must be in [0, 1)"),
        positive("model.head_init_std", cfg.model.head_init_std),
        (0 < o.layer_decay <= 1, "optim.layer_decay must be in (0, 1] (1 = no layer-wise decay)"),
        (0 <= o.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
        *[check for method in METHODS.values() for check in method.checks(cfg)],
        *train_checks(cfg.train),
        (cfg.eval.batch_size >= 1 and cfg.eval.every_epochs >= 1, "eval.batch_size and eval.every_epochs must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(f"invalid config: {msg}")
