"""A wall-clock budget turned into a number of training steps, once, at the start of a run.

The run is then an ordinary run of that many steps: every schedule ends at the end of the
budget, and the step count is saved (config.yaml and the checkpoints) so a resume continues the
same schedule however fast the machine it resumes on.
"""

from __future__ import annotations

import math

from .errors import UserError

# Kept back from the budget for checkpoints, the export, the metric lines and timing noise: a real
# 10-minute quickstart ran its 710 planned steps about 6 % slower than the 8 timed ones.
RESERVE = 0.08
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
