"""``--method consistency``: cross-entropy plus the KL from the prediction of the training view to that of a
stronger augmentation of it (``consistency.*``)."""

from __future__ import annotations

from torch import Tensor

from ...checks import Check, at_least, positive
from ..augment import ConsistencyView
from ..config import FinetuneConfig
from ..exits import MultiExitViT
from ..objectives import Consistency, Objective
from ..tables import single_rows
from .base import SingleModel
from .context import Context


class ConsistencyMethod(SingleModel):
    name = "consistency"

    @classmethod
    def checks(cls, cfg: FinetuneConfig) -> list[Check]:
        c = cfg.consistency
        return [at_least("consistency.weight", c.weight, 0),
                positive("consistency.temperature", c.temperature),
                at_least("consistency.strength", c.strength, 0, " (0 = the training view itself)")]

    def objective(self, ctx: Context, model: MultiExitViT) -> Objective:
        c = ctx.cfg.consistency
        view = ConsistencyView(c.strength, ctx.mean, ctx.std).to(ctx.device)
        return Consistency(view, c.weight, c.temperature, ctx.cfg.optim.label_smoothing)

    def rows(self, ctx: Context, logits: list[Tensor], labels: Tensor) -> list[dict]:
        c = ctx.cfg.consistency
        return single_rows(logits, labels, ctx.init.depth,
                           f"lambda {c.weight:g}, T {c.temperature:g}, strength {c.strength:g}")
