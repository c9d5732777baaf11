"""Schedules as pure functions of the step: values come from a formula, no per-run arrays."""

from __future__ import annotations

import math


def cosine(step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0,
           warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup_steps``, then a half-cosine
    from ``start`` to ``end`` over the remaining steps (DINO's ``cosine_scheduler``)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def teacher_temperature(step: int, steps_per_epoch: int, warmup_temp: float, temp: float,
                        warmup_epochs: int) -> float:
    """Linear from ``warmup_temp`` to ``temp`` over ``warmup_epochs`` epochs, then constant.

    Per step rather than per epoch (DINO changes it per epoch), so short runs warm up smoothly.
    """
    warm = warmup_epochs * steps_per_epoch
    if step >= warm:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warm


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: ``base_lr`` is the peak LR for a global batch of 256."""
    return base_lr * global_batch / 256
