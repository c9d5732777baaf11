"""Range checks of the config sections that pretraining and fine-tuning share, in one place so both
refuse the same values with the same words. Each check is ``(ok, message)``; a message names the key
and what it must be."""

from __future__ import annotations

import math
import re

Check = tuple[bool, str]


def finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def probability(name: str, value: float) -> Check:
    return finite(value) and 0 <= value <= 1, f"{name} must be a probability in [0, 1], not {value}"


def at_least(name: str, value: float, low: float, note: str = "") -> Check:
    return finite(value) and value >= low, f"{name} must be >= {low:g}{note}, not {value}"


def positive(name: str, value: float, note: str = "") -> Check:
    return finite(value) and value > 0, f"{name} must be > 0{note}, not {value}"


def data_checks(d) -> list[Check]:
    """``DataConfig``: the source, worker and subset counts, and the bad-sample limit."""
    return [
        (d.source in ("folder", "fashion_mnist", "shards"),
         "data.source must be 'folder', 'fashion_mnist' or 'shards'"),
        (d.source != "shards" or not (d.subset or d.test_subset),
         "data.subset/test_subset do not apply to shards: write fewer samples with 'dinolite shards --subset N'"),
        at_least("data.num_workers", d.num_workers, 0, " (0 = load in the main process)"),
        at_least("data.subset", d.subset, 0, " (0 = every image)"),
        at_least("data.test_subset", d.test_subset, 0, " (0 = every image)"),
        at_least("data.decode_size", d.decode_size, 8),
        at_least("data.shuffle_buffer", d.shuffle_buffer, 1),
        probability("data.max_bad_fraction", d.max_bad_fraction),
    ]


def train_checks(t) -> list[Check]:
    """The engine's ``train`` keys (``config.EngineConfig``), which both tasks' ``train`` sections inherit."""
    return [
        (t.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda"),
        at_least("train.seed", t.seed, 0),
        at_least("train.threads", t.threads, 0, " (0 = torch's default)"),
        at_least("train.log_every", t.log_every, 1),
        positive("train.checkpoint_every_minutes", t.checkpoint_every_minutes),
        at_least("train.keep_checkpoints", t.keep_checkpoints, 1),
        at_least("train.stop_after_steps", t.stop_after_steps, 0, " (0 = run to the end)"),
        (all(name in ("jsonl", "tensorboard", "wandb") for name in t.loggers),
         f"train.loggers must list jsonl, tensorboard and/or wandb, not {list(t.loggers)}"),
        (t.wandb_mode in ("offline", "online", "disabled"), "train.wandb_mode must be offline, online or disabled"),
    ]


def patch_size_of(arch: str, override: int | None) -> int | None:
    """A ViT's patch size from the override or the timm name (``..._patch16_...``); None for other models."""
    if override is not None:
        return override
    found = re.search(r"patch(\d+)", arch)
    return int(found.group(1)) if found else None
