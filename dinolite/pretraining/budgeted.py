"""The timings a pretraining run makes before its first step, as part of its task (``train.Pretrainer``): the
precision ``train.precision=fastest`` keeps, and a time budget's plan (``budget.BudgetKeeper``), which reuses that
timing. Real steps are timed (``Method.seconds_per_step``, the slowest rank's); the method's state is put back."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ..distributed import DistInfo
from ..errors import UserError
from ..eval.online import OnlineKNN
from ..loggers import MetricsWriter
from ..maths import precision
from ..methods.base import Method
from ..schema import Config
from .budget import BudgetKeeper
from .plan import RunPlan


class BudgetedTask:
    """What the pretraining task adds for the timings; the attributes are the task's."""

    cfg: Config
    method: Method
    loader: Any  # data.build_loader's: a batch loader or a shard stream
    device: torch.device
    dist: DistInfo
    metrics: MetricsWriter
    run_plan: RunPlan
    run_dir: Path
    online: OnlineKNN | None
    baselines: dict[str, float]
    keeper: BudgetKeeper | None
    step: int
    global_batch: int

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch (the task's loader)."""
        raise NotImplementedError

    def time_and_plan(self, started: float, baselines: dict[str, float]) -> list[str]:
        """Before the first step: ``train.precision=fastest``'s timing (``precision.choose_by_timing``, kept in the
        checkpoints), then a new budget run's plan, which reuses that timing; the banner's lines."""
        cfg, lines, step_s = self.cfg, [], None
        seconds = None if self.step else precision.choose_by_timing(self.method, cfg.train.precision, self.device,
                                                                       self.time_steps)
        if seconds:
            step_s = seconds[self.method.precision]
            self.metrics.write({"step": self.step, "precision": self.method.precision,
                                "precision_s_per_step": {k: round(v, 4) if math.isfinite(v) else None
                                                         for k, v in seconds.items()}})
            lines.append(precision.chosen_line(seconds, self.method.precision))
        if cfg.train.budget_minutes and not cfg.optim.total_steps and self.run_plan.budget_planned is None:
            final_eval = baselines.get("eval_seconds", 0.1 * cfg.train.budget_minutes * 60) \
                if cfg.eval.knn_at_end else 0.0
            lines.append(self.plan_budget(started, final_eval, step_s))
        return lines

    def plan_budget(self, started: float, final_eval_s: float, step_s: float | None = None) -> str:
        """Fix the run's length from ``train.budget_minutes``: time a few steps (unless ``step_s`` is known), fit
        the rest of the budget (less ``final_eval_s`` for the evaluation after training), save it in plan.json;
        the budget is then kept. Real steps are timed (``Method.seconds_per_step``, the slowest rank's)."""
        step_s = step_s or self.time_steps()
        if not math.isfinite(step_s):
            raise UserError(f"the timing steps of train.budget_minutes gave a non-finite loss or gradient in "
                            f"{self.method.precision}: set train.precision=fp32 if it was bf16 (some CPU bf16 kernels "
                            f"return NaN), else lower optim.lr")
        online_s = self.baselines.get("online_seconds", 0.0) if self.online is not None else 0.0
        budget_s = self.cfg.train.budget_minutes * 60
        keeper = BudgetKeeper(budget_s, started, step_s, final_eval_s, online_s,
                              self.cfg.eval.online_every if self.online is not None else 0, clock=time.time)
        steps = keeper.plan()
        if self.dist.world > 1:  # each rank's clock started a little apart: the ranks take the smallest plan
            agreed = torch.tensor(steps, device=self.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
            steps = int(agreed)
            keeper.agree(steps)
        self.keeper = keeper
        self.run_plan.set(steps, budget_planned=steps)
        if self.dist.is_main:
            self.run_plan.save(self.run_dir)
        return keeper.plan_line(self.global_batch, steps, self.steps_per_epoch)

    def time_steps(self) -> float:
        seconds = self.method.seconds_per_step(self.loader, self.run_plan.plan, self.step)
        per_step = torch.tensor(seconds, device=self.device)
        if self.dist.world > 1:
            torch.distributed.all_reduce(per_step, op=torch.distributed.ReduceOp.MAX)
        return float(per_step)
