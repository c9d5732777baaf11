"""A wall-clock budget turned into a number of training steps at the start of a run, and kept.

The run is an ordinary run of that many steps: every schedule ends at the end of the budget, and
the step count is saved (config.yaml and the checkpoints) so a resume continues the same schedule
however fast the machine it resumes on. When the machine slows down mid-run (another process, a
slow disk), :func:`replan_steps` shortens the plan at a log step so the command still ends within
its budget; when it runs faster than the steps timed at the start, the plan is lengthened so the
budget is not left unused. The schedules then end with the new plan.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from ..errors import UserError

# Kept back from the budget at the start for checkpoints, the export, the metric lines and the usual drift: the
# steps of a whole run are a few per cent slower than the 8 timed at its start (6 % on a 10-minute quickstart of
# 710 steps; 8-12 % on the slower machines of this kind). A run that drifts further is re-planned (below).
RESERVE = 0.05
MIN_STEPS = 10


def steps_in_budget(budget_s: float, elapsed_s: float, step_s: float, final_eval_s: float = 0.0,
                    online_eval_s: float = 0.0, online_every: int = 0) -> int:
    """How many steps of ``step_s`` seconds fit in what is left of ``budget_s``.

    ``elapsed_s`` is what the command has already spent (start-up, baselines, timing);
    ``final_eval_s`` is kept for the evaluation after training; an online evaluation of
    ``online_eval_s`` every ``online_every`` steps adds its share to every step.
    """
    left = budget_s * (1 - RESERVE) - elapsed_s - final_eval_s
    per_step = step_s + (online_eval_s / online_every if online_every else 0.0)
    steps = math.floor(left / per_step) if left > 0 else 0
    if steps < MIN_STEPS:
        raise UserError(f"train.budget_minutes={budget_s / 60:g} leaves {max(left, 0):.0f} s for training after "
                        f"{elapsed_s:.0f} s of set-up and {final_eval_s:.0f} s kept for the final evaluation, "
                        f"{steps} steps at {step_s:.2f} s/step: raise train.budget_minutes or use optim.epochs instead")
    return steps


# A re-plan aims at the budget less this share (the last checkpoint, the export, the final lines), not at the
# start's RESERVE: that reserve is there for the usual drift (the steps of a whole run are a few per cent slower
# than the few timed at its start), so an ordinary run is never re-planned; one that falls further behind is.
REPLAN_RESERVE = 0.02
# Slack before re-planning, as a share of the budget: a log interval's step time varies by several per cent even
# on an idle machine (0.9-1.14 s/step in one 10-minute quickstart), and each re-plan bends the cosine schedules a
# little. A plan is cut when the steps left overrun the time left by more than this, and lengthened back when
# they leave twice this unused: without the way back, every slow stretch would ratchet the plan down and the run
# would end a minute early (past the plan made at the start only as BudgetKeeper.replan says).
REPLAN_TOLERANCE = 0.01
# ... or this share of the time left, when that is more: early in a run the step time of a few intervals says
# little about the minutes to come, so small deviations wait; near the end the slack shrinks to the above.
REPLAN_TOLERANCE_LEFT = 0.05
# The step time a re-plan uses is measured over the most recent log intervals that hold at least this many steps
# (all of them while the run has done fewer): long enough that one slow interval (a page fault storm, the first
# steps' allocations) or an interval's ordinary jitter does not cut, short enough to follow a lasting slow-down
# within about a minute on the quickstart (1 s/step). Three intervals of 20 steps re-planned idle runs 4 to 16
# times as their step times wandered (docs/learning.md, "The time budget").
REPLAN_MIN_STEPS = 60


def replan_steps(step: int, stop: int, left_s: float, step_s: float, online_eval_s: float = 0.0,
                 online_every: int = 0, tolerance_s: float = 0.0, limit: int | None = None) -> int:
    """The stop that ends the training within ``left_s`` seconds, at ``step_s`` per step from ``step``.

    ``stop`` itself while the steps left fit with no more than ``tolerance_s`` over and no more than
    ``2 * tolerance_s`` unused; otherwise as many steps as fit, at least none (the run then stops at
    ``step``) and at most ``limit`` (None: never longer than ``stop``).
    """
    per_step = step_s + (online_eval_s / online_every if online_every else 0.0)
    need = (stop - step) * per_step
    limit = stop if limit is None else max(limit, stop)
    if need > left_s + tolerance_s or (need < left_s - 2 * tolerance_s and stop < limit):
        return step + max(0, min(limit - step, math.floor(left_s / per_step)))
    return stop


def faster_plan(planned: int, planned_step_s: float, step_s: float) -> int:
    """The first plan re-made at a measured ``step_s`` faster than the ``planned_step_s`` timed at the start: the
    steps the start would have planned for the same training time. The first plan itself unless the steps run
    more than the start's reserve faster (the reserve is there for the usual drift)."""
    if step_s >= planned_step_s * (1 - RESERVE):
        return planned
    return math.floor(planned * planned_step_s / step_s)


class BudgetKeeper:
    """A time budget kept over a run: the plan made at the start, the step time at each log step, and the
    re-plans (``replan_steps``) with their records. ``clock`` is injected (``time.time`` by default) so the
    behaviour on a slow machine is tested on a fake one.

    Damped against noise: the step time is taken over the last ``REPLAN_MIN_STEPS`` steps or more, and a plan is
    lengthened again only as far as the whole run's mean step time also allows."""

    def __init__(self, budget_s: float, started: float, step_s: float, final_eval_s: float = 0.0,
                 online_s: float = 0.0, online_every: int = 0, clock: Callable[[], float] = time.time):
        self.budget_s, self.started, self.step_s = budget_s, started, step_s
        self.final_eval_s, self.online_s, self.online_every = final_eval_s, online_s, online_every
        self.clock = clock
        self.end = started + budget_s * (1 - REPLAN_RESERVE)
        self.planned = 0  # the step count planned at the start (plan())
        self._intervals: deque[tuple[float, int]] = deque()  # (s/step, steps) of the log intervals, newest last
        self._last_step: int | None = None
        self._run_time, self._run_steps = 0.0, 0  # every observed interval: the whole run's mean step time

    def plan(self, now: float | None = None) -> int:
        """The step count that fits what is left of the budget at the step time measured at the start."""
        now = self.clock() if now is None else now
        self.planned = steps_in_budget(self.budget_s, now - self.started, self.step_s, self.final_eval_s,
                                       self.online_s, self.online_every)
        return self.planned

    def agree(self, steps: int) -> None:
        """The plan the processes agreed on (the smallest of theirs)."""
        self.planned = steps

    def left_s(self) -> float:
        """Seconds left of the budget (less the re-plan reserve) on this process's clock."""
        return self.end - self.clock()

    def observe(self, step: int, step_s: float, first_step: int) -> None:
        """A log interval that ended at ``step`` ran at ``step_s`` seconds per step."""
        steps = step - (self._last_step if self._last_step is not None else first_step)
        self._last_step = step
        self._intervals.append((step_s, max(0, steps)))
        while len(self._intervals) > 1 and sum(n for _, n in list(self._intervals)[1:]) >= REPLAN_MIN_STEPS:
            self._intervals.popleft()
        self._run_time += step_s * max(0, steps)
        self._run_steps += max(0, steps)

    def recent_step_s(self) -> float:
        return sum(s * n for s, n in self._intervals) / max(1, sum(n for _, n in self._intervals))

    def _fit(self, step: int, stop: int, left_s: float, step_s: float, tolerance_s: float, limit: int) -> int:
        """``replan_steps`` at ``step_s`` per step, the evaluations slowed down as the steps are."""
        slower = max(1.0, step_s / self.step_s)
        return replan_steps(step, stop, left_s - self.final_eval_s * slower, step_s, self.online_s * slower,
                            self.online_every, tolerance_s, limit=limit)

    def replan(self, step: int, total: int, left_s: float) -> tuple[int, dict | None]:
        """The run's new length at ``step`` with ``left_s`` seconds left (the ranks' mean), and the ``replan``
        record that says why (None when the plan stands)."""
        step_s = self.recent_step_s()
        mean_s = self._run_time / max(1, self._run_steps)
        tolerance = max(REPLAN_TOLERANCE * self.budget_s, REPLAN_TOLERANCE_LEFT * left_s)
        # Never past the first plan, unless the steps (the slower of the recent and the whole run's step time) run
        # faster than those timed at the start, which include the first allocations: a recipe without local crops
        # ran 0.176 s/step against 0.21 timed, and its first plan left 18 % of the budget unused.
        limit = faster_plan(self.planned, self.step_s, max(step_s, mean_s))
        new = self._fit(step, total, left_s, step_s, tolerance, limit)
        if new > total:  # lengthened only as far as the whole run's mean step time also allows
            new = max(total, min(new, self._fit(step, total, left_s, mean_s, tolerance, limit)))
        if new == total:
            return total, None
        return new, {"from_steps": total, "to_steps": new, "step_s": round(step_s, 4),
                     "planned_step_s": round(self.step_s, 4), "left_s": round(left_s, 1)}

    def plan_line(self, global_batch: int, steps: int, steps_per_epoch: int) -> str:
        """The line that says what the budget planned."""
        return (f"time budget {self.budget_s / 60:g} min: {self.step_s:.2f} s/step measured here "
                f"({global_batch / self.step_s:.0f} images/s), {steps} steps planned "
                f"({steps / steps_per_epoch:.2f} epochs)")

    def replan_line(self, step: int, why: dict) -> str:
        """The line that says a re-plan happened (``why``: the record :meth:`replan` returned)."""
        where = "behind" if why["to_steps"] < why["from_steps"] else "ahead of"
        return (f"{where} the time budget at step {step} ({why['step_s']:.2f} s/step against {self.step_s:.2f} "
                f"planned, {why['left_s']:.0f} s left): re-planned {why['from_steps']} -> {why['to_steps']} steps, "
                f"the schedules end with it")
