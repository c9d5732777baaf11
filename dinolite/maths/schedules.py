"""Schedules as pure functions of the step: values come from a formula, no per-run arrays.

Every duration of the recipe (the run, the LR warm-up, the teacher-temperature warm-up, the
last-layer freeze) is resolved once into a number of steps by :func:`span_steps`, so the same
recipe can speak in epochs (the ImageNet recipe), in steps, or in fractions of the run (the
quickstart: a warm-up of 10 % of the run is 10 % whether the data hold 8,000 or 60,000 images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine(step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0,
           warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup_steps``, then a half-cosine
    from ``start`` to ``end`` over the remaining steps (DINO's ``cosine_scheduler``)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def warmup_stable_decay(step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0,
                        decay_steps: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warm-up to ``start``, then ``start`` held until the last ``decay_steps`` steps, which fall from
    ``start`` to ``end`` along a half-cosine (the warm-up / stable / decay shape of Hägele et al. 2024).

    A short run spends most of a cosine schedule below its peak; this shape keeps the peak for
    ``1 - decay - warmup`` of the run and still ends at ``end``."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    decay_start = max(warmup_steps, total_steps - decay_steps)
    if step < decay_start:
        return start
    progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def learning_rate(optim, step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """The LR at ``step`` of an ``OptimConfig``'s ``lr_schedule``: DINO's cosine, or warm-up / stable / decay with
    the decay over the last ``lr_decay_fraction`` of the run; from ``peak`` down to ``optim.min_lr``."""
    if optim.lr_schedule == "wsd":
        decay = int(round(optim.lr_decay_fraction * total_steps))
        return warmup_stable_decay(step, total_steps, peak, optim.min_lr, warmup_steps, decay)
    return cosine(step, total_steps, peak, optim.min_lr, warmup_steps)


def teacher_temperature(step: int, warmup_steps: int, warmup_temp: float, temp: float) -> float:
    """Linear from ``warmup_temp`` to ``temp`` over ``warmup_steps`` steps, then constant.

    Per step rather than per epoch (DINO changes it per epoch), so short runs warm up smoothly.
    """
    if step >= warmup_steps:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warmup_steps


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: ``base_lr`` is the peak LR for a global batch of 256."""
    return base_lr * global_batch / 256


def span_steps(epochs: float, steps: int | None, fraction: float | None, steps_per_epoch: int,
               total_steps: int) -> int:
    """A duration in steps: ``steps`` if given, else ``fraction`` of ``total_steps``, else ``epochs``.

    Rounded to the nearest step, so a whole number of epochs gives exactly ``epochs * steps_per_epoch``.
    """
    if steps is not None:
        return int(steps)
    if fraction is not None:
        return int(round(fraction * total_steps))
    return int(round(epochs * steps_per_epoch))


@dataclass(frozen=True)
class Plan:
    """A run's durations in steps: its length and its three warm-up / freeze spans."""

    total: int
    steps_per_epoch: int
    warmup: int  # LR warm-up
    teacher_temp_warmup: int
    freeze_last_layer: int  # steps during which the head's last layer gets no update

    @classmethod
    def of(cls, optim, loss, steps_per_epoch: int, total: int | None = None) -> Plan:
        """Resolve an ``OptimConfig`` and a ``LossConfig`` for a loader of ``steps_per_epoch``; ``total`` (a length
        fixed elsewhere: a time budget's plan) replaces the recipe's ``optim.total_steps`` / ``optim.epochs``."""
        if total is None:
            total = optim.total_steps if optim.total_steps else optim.epochs * steps_per_epoch
        return cls(
            total=int(total), steps_per_epoch=steps_per_epoch,
            warmup=span_steps(optim.warmup_epochs, optim.warmup_steps, optim.warmup_fraction, steps_per_epoch, total),
            teacher_temp_warmup=span_steps(loss.warmup_teacher_temp_epochs, loss.warmup_teacher_temp_steps,
                                           loss.warmup_teacher_temp_fraction, steps_per_epoch, total),
            freeze_last_layer=span_steps(optim.freeze_last_layer, optim.freeze_last_layer_steps,
                                         optim.freeze_last_layer_fraction, steps_per_epoch, total),
        )
