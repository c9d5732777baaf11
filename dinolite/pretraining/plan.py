"""The run's length, owned in one place: made once (the typed step count, the recipe's epochs, or the time
budget), changed only by the budget keeper's re-plans, saved in the run directory (``plan.json``) and read back
when a budget run resumes. The config stays what the user asked for: it is never rewritten with a length (versions
before plan.json wrote a budget's length into config.yaml as optim.total_steps: :func:`old_budget_plan` reads it)."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import read_saved_config
from ..engine.checkpoint import list_checkpoints
from ..engine.rundir import CONFIG
from ..errors import UserError
from ..files import write_text
from ..maths.schedules import Plan

PLAN_FILE = "plan.json"


class RunPlan:
    """The schedules' ``Plan`` of a run and where its length came from; :meth:`set` is the one writer of the
    run's length (the start's plan and every re-plan)."""

    def __init__(self, cfg, steps_per_epoch: int):
        self._cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.budget_planned: int | None = None  # the step count a time budget fixed at the start (None: no budget)
        self.plan = Plan.of(cfg.optim, cfg.loss, steps_per_epoch)

    @property
    def total(self) -> int:
        return self.plan.total

    def set(self, total: int, budget_planned: int | None = None) -> Plan:
        """The run's length is now ``total`` steps: every span (warm-up, freeze) is re-resolved on it.
        ``budget_planned``: the step count a time budget fixed at the start (given by the budget's plan)."""
        self.plan = Plan.of(self._cfg.optim, self._cfg.loss, self.steps_per_epoch, total=int(total))
        if budget_planned is not None:
            self.budget_planned = int(budget_planned)
        return self.plan

    def save(self, run_dir: Path) -> None:
        """``plan.json``: the length the schedules run on, and the budget that fixed it (0: none)."""
        record = {"total_steps": self.total, "budget_minutes": self._cfg.train.budget_minutes
                  if self.budget_planned is not None else 0, "budget_planned_steps": self.budget_planned,
                  "steps_per_epoch": self.steps_per_epoch}
        write_text(Path(run_dir) / PLAN_FILE, json.dumps(record, indent=1) + "\n")


def read_plan(run_dir: str | Path) -> dict | None:
    """The ``plan.json`` of a run directory (None when it has none)."""
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}): restore it, or start a new train.output_dir") from None


def old_budget_plan(cfg) -> dict | None:
    """A budget run made before plan.json existed, in ``cfg``'s run directory: the ``total_steps`` its budget wrote
    into its config.yaml and that ``budget_minutes``; None when the directory has a plan.json or holds no such run."""
    run_dir = Path(cfg.train.output_dir)
    saved = run_dir / CONFIG
    if (run_dir / PLAN_FILE).is_file() or not saved.is_file():
        return None
    old = read_saved_config(saved, type(cfg))
    if not old.train.budget_minutes or not old.optim.total_steps:
        return None
    return {"total_steps": old.optim.total_steps, "budget_minutes": old.train.budget_minutes}


def resumed_budget_plan(cfg) -> tuple[int, int] | None:
    """The step count a time-budget run fixed (its ``plan.json``, after any re-plan, or an older run's config.yaml)
    and the one planned at its start, when ``cfg`` resumes one; None for a fresh run or a run of a typed length.
    A resume with another budget is refused in one line."""
    run_dir, budget = Path(cfg.train.output_dir), cfg.train.budget_minutes
    if not budget or cfg.optim.total_steps or not list_checkpoints(run_dir):
        return None
    saved = read_plan(run_dir)
    if saved is None:
        saved = old_budget_plan(cfg)
    if not saved or not saved.get("budget_minutes"):
        return None
    steps, planned = int(saved["total_steps"]), float(saved["budget_minutes"])
    if budget != planned:
        raise UserError(f"{run_dir} was planned for train.budget_minutes={planned:g} ({steps} steps): "
                        f"resume with train.budget_minutes={planned:g}, or start a new train.output_dir")
    return steps, int(saved.get("budget_planned_steps") or steps)
