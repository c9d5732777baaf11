"""The time budget: a pure step count from measured timings, fixed once, saved, and kept on resume."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dinolite.errors import UserError
from dinolite.maths.schedules import Plan
from dinolite.pretraining.budget import (
    REPLAN_MIN_STEPS,
    REPLAN_RESERVE,
    REPLAN_TOLERANCE,
    RESERVE,
    BudgetKeeper,
    faster_plan,
    replan_steps,
    steps_in_budget,
)
from dinolite.pretraining.plan import read_plan
from dinolite.pretraining.rundir import prepare_run_dir
from dinolite.pretraining.train import Pretrainer, pretrain
from tests.helpers import tiny_config


def test_steps_fill_what_is_left_of_the_budget():
    # 600 s budget, 3 % kept back, 40 s spent, 60 s kept for the final k-NN: 482 s at 0.5 s/step
    assert steps_in_budget(600, 40, 0.5, final_eval_s=60) == int((600 * (1 - RESERVE) - 100) / 0.5)
    # an online k-NN of 2 s every 100 steps costs 0.02 s per step
    with_online = steps_in_budget(600, 40, 0.5, 60, online_eval_s=2, online_every=100)
    assert with_online == int((600 * (1 - RESERVE) - 100) / 0.52)
    assert steps_in_budget(600, 40, 0.25, 60) == 2 * steps_in_budget(600, 40, 0.5, 60)  # a machine twice as fast


def test_a_budget_too_short_is_one_line():
    with pytest.raises(UserError, match="raise train.budget_minutes"):
        steps_in_budget(60, 50, 1.0, final_eval_s=20)


def fixed_plan(monkeypatch, steps: int, lengthen: bool = False) -> list[tuple]:
    """The planner's answer fixed at ``steps`` (its arithmetic is tested above), so a test does not depend on how
    fast or how loaded the machine is; the steps are still timed for real, and a run faster than its timing is
    lengthened only with ``lengthen``. Returns the planner's inputs."""
    import dinolite.pretraining.budget

    seen: list[tuple] = []

    def plan(*args, **kwargs):
        seen.append(args)
        return steps

    monkeypatch.setattr(dinolite.pretraining.budget, "steps_in_budget", plan)
    if not lengthen:
        monkeypatch.setattr(dinolite.pretraining.budget, "faster_plan", lambda planned, *_: planned)
    return seen


def test_budget_fixes_the_step_count_and_a_resume_keeps_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    # a budget the 12 tiny steps fit in however loaded the machine, so it is not re-planned (tested below)
    extra = {"train.budget_minutes": 2, "eval.knn_at_end": False, "optim.epochs": 1000,
             "optim.warmup_fraction": 0.1, "train.log_every": 5}
    seen = fixed_plan(monkeypatch, 12)
    pretrain(tiny_config(run, **{**extra, "train.stop_after_steps": 5}), progress=False)
    saved = read_plan(run)
    planned = saved["total_steps"]
    assert planned == 12 and saved["budget_minutes"] == 2
    # the config stays what was asked for: a budget, no step count
    assert OmegaConf.load(run / "config.yaml").optim.total_steps is None
    budget_s, spent_s, step_s = seen[0][:3]
    assert budget_s == 2 * 60 and spent_s > 0 and step_s > 0  # the planner got the budget and real timings
    assert (run / "checkpoint-00000005.pt").is_file()

    def no_timing(self, *a, **k):
        raise AssertionError("a resumed budget run must not time steps again")

    monkeypatch.setattr(Pretrainer, "time_steps", no_timing)
    trainer = Pretrainer(tiny_config(run, **extra), progress=False)
    assert trainer.step == 5 and trainer.total_steps == planned
    assert trainer.plan.warmup == round(0.1 * planned)
    assert read_plan(run)["total_steps"] == planned

    with pytest.raises(UserError, match="train.budget_minutes=2"):
        Pretrainer(tiny_config(run, **{**extra, "train.budget_minutes": 5}), progress=False)


def test_a_budget_run_made_before_plan_json_resumes_on_its_saved_step_count(tmp_path, monkeypatch):
    """Versions before plan.json wrote a budget's step count into config.yaml as optim.total_steps: such a run
    directory resumes from its checkpoint on that count, neither re-planned nor refused as a schedule change."""
    run = tmp_path / "run"
    extra = {"train.budget_minutes": 2, "eval.knn_at_end": False, "optim.epochs": 1000, "train.log_every": 5}
    fixed_plan(monkeypatch, 12)
    pretrain(tiny_config(run, **{**extra, "train.stop_after_steps": 5}), progress=False)
    (run / "plan.json").unlink()  # made old: no plan.json, the planned count in its config.yaml
    old = OmegaConf.load(run / "config.yaml")
    old.optim.total_steps = 12
    OmegaConf.save(old, run / "config.yaml")

    def no_timing(self, *a, **k):
        raise AssertionError("a resumed budget run must not time steps again")

    monkeypatch.setattr(Pretrainer, "time_steps", no_timing)
    prepare_run_dir(tiny_config(run, **extra), is_main=False)  # the launcher's check passes too (writes nothing)
    with pytest.raises(UserError, match="train.budget_minutes=2 \\(12 steps\\)") as refused:
        Pretrainer(tiny_config(run, **{**extra, "train.budget_minutes": 5}), progress=False)
    assert "\n" not in str(refused.value)
    trainer = Pretrainer(tiny_config(run, **extra), progress=False)
    assert trainer.step == 5 and trainer.total_steps == 12 and trainer.run.schedule_changes == {}
    assert read_plan(run)["total_steps"] == 12  # now a run of today: plan.json, and the config as asked
    assert OmegaConf.load(run / "config.yaml").optim.total_steps is None


@pytest.mark.slow
def test_budget_run_is_the_planned_run(tmp_path, monkeypatch):
    """Timing leaves no trace: a budget run (10 real steps timed, then rolled back) equals an ordinary run of the
    step count it planned. The plan is fixed (fixed_plan), so a loaded machine cannot change what is compared."""
    import torch

    budget, plain = tmp_path / "budget", tmp_path / "plain"
    common = {"eval.knn_at_end": False, "optim.warmup_fraction": 0.2, "model.drop_path_rate": 0.0}
    fixed_plan(monkeypatch, 9)
    pretrain(tiny_config(budget, **{**common, "train.budget_minutes": 2}), progress=False)
    steps = read_plan(budget)["total_steps"]
    pretrain(tiny_config(plain, **{**common, "optim.total_steps": steps}), progress=False)
    a = torch.load(sorted(budget.glob("checkpoint-*.pt"))[-1], weights_only=True)
    b = torch.load(sorted(plain.glob("checkpoint-*.pt"))[-1], weights_only=True)
    assert a["step"] == b["step"] == steps
    for k in a["teacher"]:
        torch.testing.assert_close(a["teacher"][k], b["teacher"][k], msg=k)


def test_replan_keeps_the_plan_while_the_steps_left_fit():
    # 40 steps left at 1 s fit in 45 s; at 1.2 s (48 s) they fit only within a 5 s tolerance
    assert replan_steps(60, 100, left_s=45, step_s=1.0) == 100
    assert replan_steps(60, 100, left_s=45, step_s=1.2, tolerance_s=5) == 100
    # behind: as many steps as fit in what is left, online evaluations included
    assert replan_steps(60, 100, left_s=45, step_s=1.2) == 60 + 37
    assert replan_steps(60, 100, left_s=45, step_s=1.0, online_eval_s=10, online_every=5) == 60 + 15
    assert replan_steps(60, 100, left_s=-3, step_s=1.0) == 60  # past the budget: stop at this step
    assert replan_steps(60, 100, left_s=500, step_s=0.1) == 100  # faster than planned: never past the plan
    # a slow stretch has passed: lengthened back when twice the tolerance would go unused, up to the first plan
    assert replan_steps(60, 80, left_s=30, step_s=1.0, tolerance_s=2, limit=100) == 90
    assert replan_steps(60, 80, left_s=60, step_s=1.0, tolerance_s=2, limit=100) == 100
    assert replan_steps(60, 80, left_s=23, step_s=1.0, tolerance_s=2, limit=100) == 80  # within the slack


def test_the_keeper_measures_over_at_least_the_minimum_steps_and_lengthens_only_on_the_whole_runs_mean():
    """Damping, on an injected clock: one slow log interval among fast ones does not cut the plan (the step time
    is taken over REPLAN_MIN_STEPS steps, not the last 3 intervals), and after a slow stretch the plan is given
    back only as far as the whole run's mean step time also fits."""
    now = [0.0]
    keeper = BudgetKeeper(budget_s=600, started=0.0, step_s=1.0, clock=lambda: now[0])
    total = keeper.plan()
    assert total == steps_in_budget(600, 0.0, 1.0) == 570
    step = 0

    def interval(step_s: float, steps: int = 10) -> None:
        nonlocal step
        step += steps
        now[0] += steps * step_s
        keeper.observe(step, step_s, 0)

    for _ in range(12):
        interval(1.0)
    interval(1.4)  # one slow interval of 10 steps
    assert keeper.recent_step_s() == pytest.approx((50 * 1.0 + 10 * 1.4) / 60)  # the last 60 steps
    left = keeper.left_s()
    tolerance = max(REPLAN_TOLERANCE * 600, 0.05 * left)
    assert replan_steps(step, total, left, (20 * 1.0 + 10 * 1.4) / 30, tolerance_s=tolerance) < total  # 3 intervals
    assert keeper.replan(step, total, left) == (total, None)  # 60 steps: it still fits, no cut
    for _ in range(6):  # a lasting slow-down: cut
        interval(3.0)
    left = keeper.left_s()
    cut, why = keeper.replan(step, total, left)
    assert cut < total and why == {"from_steps": total, "to_steps": cut, "step_s": 3.0, "planned_step_s": 1.0,
                                   "left_s": round(left, 1)}
    for _ in range(6):  # fast again: the last 60 steps alone would give back more than the whole run's mean allows
        interval(1.0)
    left = keeper.left_s()
    back, _ = keeper.replan(step, cut, left)
    tolerance = max(REPLAN_TOLERANCE * 600, 0.05 * left)
    recent_only = replan_steps(step, cut, left, 1.0, tolerance_s=tolerance, limit=total)
    assert cut < back < recent_only <= total
    assert REPLAN_MIN_STEPS >= 60


class FakeClock:
    """Seconds that pass only when a step runs: ``slow_from`` on, a step takes ``slow_s`` instead of ``fast_s``."""

    def __init__(self, fast_s: float, slow_s: float, slow_from: int, slow_until: int = 10**9):
        self.now, self.fast_s, self.slow_s = 1000.0, fast_s, slow_s
        self.slow_from, self.slow_until = slow_from, slow_until

    def time(self) -> float:
        return self.now

    def step(self, step: int) -> None:
        self.now += self.slow_s if self.slow_from <= step < self.slow_until else self.fast_s


def run_on_clock(tmp_path, monkeypatch, clock: FakeClock, planned: int = 40) -> tuple[list[dict], dict]:
    """A tiny budget run (1 minute, ``planned`` steps of 1 s as timed at the start) whose steps take the time
    ``clock`` says; returns its metrics records and the trainer (under "trainer")."""
    import json
    import types

    import dinolite.engine.loop
    import dinolite.pretraining.budgeted
    import dinolite.pretraining.train

    for module in (dinolite.pretraining.train, dinolite.pretraining.budgeted, dinolite.engine.loop):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time=clock.time))
    monkeypatch.setattr(Pretrainer, "time_steps", lambda self: 1.0)
    fixed_plan(monkeypatch, planned, lengthen=True)
    run_step = Pretrainer.run_step

    def timed_step(self, batch):
        clock.step(self.step)
        return run_step(self, batch)

    monkeypatch.setattr(Pretrainer, "run_step", timed_step)
    seen: dict = {}
    pretrain(tiny_config(tmp_path / "run", **BUDGET_RUN), progress=False, setup=lambda t: seen.setdefault("trainer", t),
             started=clock.time())
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()], seen


BUDGET_RUN = {"train.budget_minutes": 1, "eval.knn_at_end": False, "optim.epochs": 1000, "train.log_every": 5,
              "optim.warmup_fraction": 0.1}


def test_a_run_that_falls_behind_replans_and_ends_within_its_budget(tmp_path, monkeypatch):
    """The machine slows down 3x from step 10 (an injected clock: the test does not depend on the machine's load).
    The run re-plans at the next log step so that it ends within the budget, saves the new plan in config.yaml and
    metrics.jsonl, its schedules end with it, and a resume continues the new plan."""
    clock = FakeClock(fast_s=1.0, slow_s=3.0, slow_from=10)
    records, seen = run_on_clock(tmp_path, monkeypatch, clock)  # 40 planned steps of 1 s in a 60 s budget
    cfg = seen["trainer"].cfg
    assert clock.now <= 1000.0 + 60 * (1 - REPLAN_RESERVE) + REPLAN_TOLERANCE * 60, clock.now - 1000
    replans = [r for r in records if "replan" in r]
    # at step 12, the first log step after the slow-down (an epoch's end), the last 3 intervals' 1.57 s/step
    # overrun the 42.8 s left by less than the slack (5 % of the time left); at step 15 (2.43 s/step) they do.
    # Then cut again as the recent step time catches up with the 3 s steps: each plan shorter than the one before
    assert replans[0]["step"] == 15 and replans[0]["replan"]["from_steps"] == 40
    plans = [40] + [r["replan"]["to_steps"] for r in replans]
    assert plans == sorted(plans, reverse=True) and len(set(plans)) == len(plans)
    final = plans[-1]
    # 25 s spent by step 15, 33.8 s left: 11 steps of 3 s fit, the run is not cut shorter than that
    assert final == 15 + 11
    assert records[-1]["step"] == final and read_plan(tmp_path / "run")["total_steps"] == final
    trainer = seen["trainer"]
    assert trainer.plan.total == final and trainer.plan.warmup == round(0.1 * final)
    # the last step ran the schedules' last values: the new plan, not the old one, ended them
    assert records[-1]["lr"] == pytest.approx(trainer.method.schedule(final - 1, trainer.plan).lr)
    assert records[-1]["lr"] < trainer.method.schedule(final - 1, Plan.of(cfg.optim.__class__(**{**vars(cfg.optim),
                                                                   "total_steps": 40}), cfg.loss, 4)).lr
    resumed = Pretrainer(tiny_config(tmp_path / "run", **BUDGET_RUN), progress=False)
    assert resumed.total_steps == final and resumed.step == final


def test_a_run_faster_than_timed_is_lengthened_and_fills_its_budget(tmp_path, monkeypatch):
    """The start timed 1 s/step (40 steps planned) and every step takes 0.7 s: at the log steps the plan grows past the
    first plan, up to the 57 steps the start would have planned at 0.7 s, and the run still ends within its budget."""
    clock = FakeClock(fast_s=0.7, slow_s=0.7, slow_from=0)
    records, seen = run_on_clock(tmp_path, monkeypatch, clock)
    plans = [40] + [r["replan"]["to_steps"] for r in records if "replan" in r]
    assert plans == sorted(plans) and plans[-1] == faster_plan(40, 1.0, 0.7) == 57
    assert records[-1]["step"] == 57 == read_plan(tmp_path / "run")["total_steps"] == seen["trainer"].plan.total
    assert clock.now <= 1000.0 + 60 * (1 - REPLAN_RESERVE) + REPLAN_TOLERANCE * 60, clock.now - 1000


def test_the_first_plan_is_remade_only_for_steps_faster_than_the_reserve():
    assert faster_plan(100, 1.0, 0.96) == 100 and faster_plan(100, 1.0, 1.5) == 100
    assert faster_plan(100, 1.0, 0.8) == 125


def test_a_run_as_fast_as_timed_is_never_replanned(tmp_path, monkeypatch):
    records, _ = run_on_clock(tmp_path, monkeypatch, FakeClock(fast_s=1.0, slow_s=1.0, slow_from=0))
    assert not [r for r in records if "replan" in r] and records[-1]["step"] == 40


def test_a_slow_stretch_cuts_the_plan_and_its_end_gives_steps_back(tmp_path, monkeypatch):
    """Steps 10-17 take 3 s, the others 1 s: the plan is cut during the slow stretch and lengthened again after it
    (never past the 40 steps planned at the start), so a passing slow-down does not leave the budget unused."""
    clock = FakeClock(fast_s=1.0, slow_s=3.0, slow_from=10, slow_until=18)
    records, _ = run_on_clock(tmp_path, monkeypatch, clock)
    plans = [40] + [r["replan"]["to_steps"] for r in records if "replan" in r]
    low = min(plans)
    assert low < 40 and plans.index(low) < len(plans) - 1 and plans[-1] > low  # cut, then given back
    assert max(plans[1:]) <= 40
    assert clock.now <= 1000.0 + 60 * (1 - REPLAN_RESERVE) + REPLAN_TOLERANCE * 60, clock.now - 1000
    # within 2 tolerances (and a step) of the budget's end: the time given back was used
    assert clock.now >= 1000.0 + 60 * (1 - REPLAN_RESERVE) - 2 * REPLAN_TOLERANCE * 60 - 1 - 1, clock.now - 1000
    assert records[-1]["step"] == plans[-1]
