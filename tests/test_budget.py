"""The time budget: a pure step count from measured timings, fixed once, saved, and kept on resume."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dinolite.budget import RESERVE, steps_in_budget
from dinolite.errors import UserError
from dinolite.train import Pretrainer, pretrain
from tests.helpers import tiny_config


def test_steps_fill_what_is_left_of_the_budget():
    # 600 s budget, 3 % kept back, 40 s spent, 60 s kept for the final k-NN: 482 s at 0.5 s/step
    assert steps_in_budget(600, 40, 0.5, final_eval_s=60) == int((600 * (1 - RESERVE) - 100) / 0.5)
    # an online k-NN of 2 s every 100 steps costs 0.02 s per step
    assert steps_in_budget(600, 40, 0.5, 60, online_eval_s=2, online_every=100) == int((600 * (1 - RESERVE) - 100) / 0.52)
    assert steps_in_budget(600, 40, 0.25, 60) == 2 * steps_in_budget(600, 40, 0.5, 60)  # a machine twice as fast


def test_a_budget_too_short_is_one_line():
    with pytest.raises(UserError, match="raise train.budget_minutes"):
        steps_in_budget(60, 50, 1.0, final_eval_s=20)


def fixed_plan(monkeypatch, steps: int) -> list[tuple]:
    """The planner's answer fixed at ``steps`` (its arithmetic is tested above), so a test does not depend on how
    fast or how loaded the machine is; the steps are still timed for real. Returns the planner's inputs."""
    import dinolite.train

    seen: list[tuple] = []

    def plan(*args, **kwargs):
        seen.append(args)
        return steps

    monkeypatch.setattr(dinolite.train, "steps_in_budget", plan)
    return seen


def test_budget_fixes_the_step_count_and_a_resume_keeps_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    extra = {"train.budget_minutes": 0.3, "eval.knn_at_end": False, "optim.epochs": 1000,
             "optim.warmup_fraction": 0.1, "train.log_every": 5}
    seen = fixed_plan(monkeypatch, 12)
    pretrain(tiny_config(run, **{**extra, "train.stop_after_steps": 5}), progress=False)
    saved = OmegaConf.load(run / "config.yaml")
    planned = saved.optim.total_steps
    assert planned == 12 and saved.train.budget_minutes == 0.3
    budget_s, spent_s, step_s = seen[0][:3]
    assert budget_s == 0.3 * 60 and spent_s > 0 and step_s > 0  # the planner got the budget and real timings
    assert (run / "checkpoint-00000005.pt").is_file()

    def no_timing(self, *a, **k):
        raise AssertionError("a resumed budget run must not time steps again")

    monkeypatch.setattr(Pretrainer, "time_steps", no_timing)
    trainer = Pretrainer(tiny_config(run, **extra), progress=False)
    assert trainer.step == 5 and trainer.total_steps == planned
    assert trainer.plan.warmup == round(0.1 * planned)
    assert OmegaConf.load(run / "config.yaml").optim.total_steps == planned

    with pytest.raises(UserError, match="train.budget_minutes=0.3"):
        Pretrainer(tiny_config(run, **{**extra, "train.budget_minutes": 5}), progress=False)


@pytest.mark.slow
def test_budget_run_is_the_planned_run(tmp_path, monkeypatch):
    """Timing leaves no trace: a budget run (10 real steps timed, then rolled back) equals an ordinary run of the
    step count it planned. The plan is fixed (fixed_plan), so a loaded machine cannot change what is compared."""
    import torch

    budget, plain = tmp_path / "budget", tmp_path / "plain"
    common = {"eval.knn_at_end": False, "optim.warmup_fraction": 0.2, "model.drop_path_rate": 0.0}
    fixed_plan(monkeypatch, 9)
    pretrain(tiny_config(budget, **{**common, "train.budget_minutes": 0.2}), progress=False)
    steps = OmegaConf.load(budget / "config.yaml").optim.total_steps
    pretrain(tiny_config(plain, **{**common, "optim.total_steps": steps}), progress=False)
    a = torch.load(sorted(budget.glob("checkpoint-*.pt"))[-1], weights_only=True)
    b = torch.load(sorted(plain.glob("checkpoint-*.pt"))[-1], weights_only=True)
    assert a["step"] == b["step"] == steps
    for k in a["teacher"]:
        torch.testing.assert_close(a["teacher"][k], b["teacher"][k], msg=k)
