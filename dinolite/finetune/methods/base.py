"""What a fine-tuning method is to the rest of the code: a name, the checks of its config section, the exits
its models carry, and how it runs (one model, or several) into a results dict. ``registry.py`` lists them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import Tensor

    from ...checks import Check
    from ..config import FinetuneConfig
    from ..exits import MultiExitViT
    from ..objectives import Objective
    from .context import Context


class FinetuneMethod(ABC):
    """One ``--method``. The defaults fit a method whose models are plain classifiers (no exits)."""

    name: ClassVar[str]  # the --method value, saved in the run's config (its identity) and its results
    fixed_on_resume: ClassVar[tuple[str, ...]] = ()  # its config keys a resume may not change (models, views)

    @classmethod
    def checks(cls, cfg: FinetuneConfig) -> list[Check]:
        """Range checks of the method's own config section; every method's run whichever is chosen, so a bad
        value is refused even in a recipe that does not use it yet."""
        return []

    def exit_blocks(self, cfg: FinetuneConfig, depth: int) -> list[int]:
        """Blocks (1-based, sorted) carrying an exit classifier before the final one, for a backbone of
        ``depth`` blocks; raises a UserError for blocks that do not fit it."""
        return []

    def hint(self, cfg: FinetuneConfig) -> bool:
        """Whether each exit gets a feature-hint adapter."""
        return False

    @abstractmethod
    def run(self, ctx: Context, run_dir: Path) -> dict | None:
        """Train (or resume, or read back) the method's models in ``run_dir``: the results dict (``ctx.results``)
        on rank 0 once every model is finished, else None (stopped early, or another rank)."""


class SingleModel(FinetuneMethod):
    """A method that trains one model in the run directory with its own objective and turns that model's
    test logits into its table rows."""

    @abstractmethod
    def objective(self, ctx: Context, model: MultiExitViT) -> Objective:
        """The training objective of ``model`` (built after the model: it may need its shape or device)."""

    @abstractmethod
    def rows(self, ctx: Context, logits: list[Tensor], labels: Tensor) -> list[dict]:
        """The results table's rows from the per-exit test logits (shallow to deep) and the labels."""

    def top1(self, rows: list[dict]) -> float:
        """The run's headline accuracy: the first row's."""
        return float(rows[0]["top1"])

    def run(self, ctx: Context, run_dir: Path) -> dict | None:
        c = ctx.cfg
        finished, out = ctx.train(run_dir, lambda model: self.objective(ctx, model), c.train.seed,
                                  c.train.stop_after_steps, self.name)
        if not finished:
            ctx.stopped()
        if out is None:
            return None
        logits, labels = out
        rows = self.rows(ctx, logits, labels)
        return ctx.results(rows, labels, 1, self.top1(rows))
