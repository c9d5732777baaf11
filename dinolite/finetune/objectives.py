"""Per-method training objectives: which forward passes a batch takes and which loss terms they feed.

Each objective is called with the model being trained, the normalised training views, the same
views in [0, 1] (for a second augmentation), the labels and the augmentation generator, and returns
``(loss, logs)``; ``logs`` holds detached scalars for the metrics file.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from ..maths.augment import RNG
from . import losses
from .augment import ConsistencyView


class Objective(Protocol):
    """What the trainer calls every step: ``(loss, logs)``; ``logs["final"]`` holds the final exit's detached
    logits (for the training accuracy)."""

    def __call__(self, model: nn.Module, x: Tensor, raw: Tensor, y: Tensor,
                 g: RNG) -> tuple[Tensor, dict[str, Tensor]]: ...


class Supervised:
    """Cross-entropy of the final classifier (label smoothing optional): the baseline."""

    def __init__(self, label_smoothing: float = 0.0):
        self.smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: Tensor, raw: Tensor, y: Tensor, g: RNG):
        logits = model(x)[-1]
        ce = losses.cross_entropy(logits, y, self.smoothing)
        return ce, {"ce": ce.detach(), "final": logits.detach()}


class BornAgain:
    """Student vs. the previous generation, which sees the same views, frozen, in eval mode."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float, label_smoothing: float = 0.0):
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.t, self.smoothing = alpha, temperature, label_smoothing

    def __call__(self, model, x, raw, y, g):
        with torch.no_grad():
            teacher_logits = self.teacher(x)[-1]
        logits = model(x)[-1]
        loss, logs = losses.born_again_loss(logits, teacher_logits, y, self.alpha, self.t, self.smoothing)
        return loss, {**logs, "final": logits.detach()}


class Layerwise:
    """All exits trained together: CE on each, KL from the detached final exit, optional feature hint."""

    def __init__(self, temperature: float, kd_weight: float, hint_weight: float = 0.0, label_smoothing: float = 0.0):
        self.t, self.kd_weight, self.hint_weight, self.smoothing = temperature, kd_weight, hint_weight, label_smoothing

    def __call__(self, model, x, raw, y, g):
        out = model(x, all_outputs=True)
        pairs = [(h, out.final_feature) for h in out.hints] if out.hints else None
        loss, logs = losses.layerwise_loss(out.logits, y, self.t, self.kd_weight, pairs, self.hint_weight,
                                           self.smoothing)
        return loss, {**logs, "final": out.logits[-1].detach()}


class Consistency:
    """CE on the training view plus the KL from its detached prediction to that of a stronger view of it.

    Both views go through the model as one batch (one forward, so DDP sees one pass).
    """

    def __init__(self, view: ConsistencyView, weight: float, temperature: float, label_smoothing: float = 0.0):
        self.view, self.weight, self.t, self.smoothing = view, weight, temperature, label_smoothing

    def __call__(self, model, x, raw, y, g):
        strong = self.view(raw, g)
        logits = model(torch.cat([x, strong]))[-1]
        clean, aug = logits[:len(x)], logits[len(x):]
        loss, logs = losses.consistency_loss(clean, aug, y, self.weight, self.t, self.smoothing)
        return loss, {**logs, "final": clean.detach()}
