"""``--method layerwise`` (Be Your Own Teacher): exit classifiers on intermediate blocks, each distilled from
the final one (``layerwise.*``); its table adds the ensemble of the exits and early-exit inference."""

from __future__ import annotations

from torch import Tensor

from ...checks import Check, at_least, positive
from ..config import FinetuneConfig
from ..exits import MultiExitViT, check_exit_blocks, default_exit_blocks
from ..objectives import Layerwise, Objective
from ..tables import layerwise_rows
from .base import SingleModel
from .context import Context


class LayerwiseMethod(SingleModel):
    name = "layerwise"
    fixed_on_resume = ("layerwise.exits", "layerwise.hint_weight")

    @classmethod
    def checks(cls, cfg: FinetuneConfig) -> list[Check]:
        lw = cfg.layerwise
        return [positive("layerwise.temperature", lw.temperature),
                at_least("layerwise.kd_weight", lw.kd_weight, 0),
                at_least("layerwise.hint_weight", lw.hint_weight, 0, " (0 = no hint)"),
                (all(0 < t <= 1 for t in lw.thresholds), "layerwise.thresholds must lie in (0, 1]")]

    def exit_blocks(self, cfg: FinetuneConfig, depth: int) -> list[int]:
        return check_exit_blocks(list(cfg.layerwise.exits) or default_exit_blocks(depth), depth)

    def hint(self, cfg: FinetuneConfig) -> bool:
        return cfg.layerwise.hint_weight > 0

    def objective(self, ctx: Context, model: MultiExitViT) -> Objective:
        lw = ctx.cfg.layerwise
        return Layerwise(lw.temperature, lw.kd_weight, lw.hint_weight, ctx.cfg.optim.label_smoothing)

    def rows(self, ctx: Context, logits: list[Tensor], labels: Tensor) -> list[dict]:
        return layerwise_rows(logits, labels, ctx.exits + [ctx.init.depth], list(ctx.cfg.layerwise.thresholds))

    def top1(self, rows: list[dict]) -> float:
        """The final classifier's (the rows start with the shallow exits)."""
        return float(next(r["top1"] for r in rows if r["model"].startswith("final")))
