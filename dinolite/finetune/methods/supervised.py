"""``--method supervised``: cross-entropy of the classifier, the baseline the distillation methods are held to."""

from __future__ import annotations

from torch import Tensor

from ..exits import MultiExitViT
from ..objectives import Objective, Supervised
from ..tables import single_rows
from .base import SingleModel
from .context import Context


class SupervisedMethod(SingleModel):
    name = "supervised"

    def objective(self, ctx: Context, model: MultiExitViT) -> Objective:
        return Supervised(ctx.cfg.optim.label_smoothing)

    def rows(self, ctx: Context, logits: list[Tensor], labels: Tensor) -> list[dict]:
        smooth = ctx.cfg.optim.label_smoothing
        return single_rows(logits, labels, ctx.init.depth, f"label smoothing {smooth:g}" if smooth else "")
