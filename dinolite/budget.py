"""A wall-clock budget turned into a number of training steps at the start of a run, and kept.

The run is an ordinary run of that many steps: every schedule ends at the end of the budget, and
the step count is saved (config.yaml and the checkpoints) so a resume continues the same schedule
however fast the machine it resumes on. When the machine slows down mid-run (another process, a
slow disk), :func:`replan_steps` shortens the plan at a log step so the command still ends within
its budget; the schedules then end with the new plan.
"""

from __future__ import annotations

import math

from .errors import UserError

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
# little. A plan is cut when the steps left overrun the time left by more than this, and lengthened back (never
# past the plan made at the start) when they leave twice this unused: without the way back, every slow stretch
# would ratchet the plan down and the run would end a minute early.
REPLAN_TOLERANCE = 0.01
# ... or this share of the time left, when that is more: early in a run the step time of a few intervals says
# little about the minutes to come, so small deviations wait; near the end the slack shrinks to the above.
REPLAN_TOLERANCE_LEFT = 0.05
# Log intervals whose steps give the step time a re-plan uses: recent enough to follow a slow-down within a
# minute, long enough that one slow interval (a page fault storm, the first steps' allocations) does not cut.
REPLAN_INTERVALS = 3


def replan_steps(step: int, stop: int, left_s: float, step_s: float, online_eval_s: float = 0.0,
                 online_every: int = 0, tolerance_s: float = 0.0, limit: int | None = None) -> int:
    """The stop that ends the training within ``left_s`` seconds, at ``step_s`` per step from ``step``.

    ``stop`` itself while the steps left fit with no more than ``tolerance_s`` over and no more than
    ``2 * tolerance_s`` unused; otherwise as many steps as fit, at least none (the run then stops at
    ``step``) and at most ``limit`` (the plan made at the start: a re-plan keeps the budget, it does not
    make the run longer than its first plan).
    """
    per_step = step_s + (online_eval_s / online_every if online_every else 0.0)
    need = (stop - step) * per_step
    limit = stop if limit is None else max(limit, stop)
    if need > left_s + tolerance_s or (need < left_s - 2 * tolerance_s and stop < limit):
        return step + max(0, min(limit - step, math.floor(left_s / per_step)))
    return stop
