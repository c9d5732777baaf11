import math

import pytest

from dinolite.maths.schedules import cosine, scaled_lr


def test_cosine_warmup_and_ends():
    assert cosine(0, 100, 1.0, 0.0, warmup_steps=10) == 0.0
    assert cosine(5, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)
    assert cosine(10, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine(55, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)
    assert cosine(100, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.0)
    assert cosine(500, 100, 1.0, 0.0) == pytest.approx(0.0)  # past the end it stays at the end value


def test_cosine_matches_formula_and_is_monotone():
    values = [cosine(s, 50, 0.996, 1.0) for s in range(51)]
    for s, v in enumerate(values):
        assert v == pytest.approx(1.0 + 0.5 * (0.996 - 1.0) * (1 + math.cos(math.pi * s / 50)))
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_linear_scaling_rule():
    assert scaled_lr(0.0005, 1024) == pytest.approx(0.002)


# ---- durations in epochs, steps or fractions of the run -------------------------------------------

from dinolite.config import LossConfig, OptimConfig  # noqa: E402
from dinolite.maths.schedules import Plan, span_steps, teacher_temperature  # noqa: E402


def test_span_steps_takes_steps_then_fraction_then_epochs():
    assert span_steps(2, None, None, steps_per_epoch=39, total_steps=468) == 78
    assert span_steps(2, 50, None, 39, 468) == 50
    assert span_steps(2, None, 0.25, 39, 468) == 117
    assert span_steps(0.5, None, None, 39, 468) == 20  # half an epoch, rounded to the nearest step


@pytest.mark.parametrize("steps_per_epoch,epochs", [(39, 12), (234, 4), (7, 3)])
def test_step_and_fraction_forms_equal_the_epoch_forms(steps_per_epoch, epochs):
    """The same recipe written three ways gives the same plan, hence the same schedules at every step."""
    total = epochs * steps_per_epoch
    by_epochs = Plan.of(OptimConfig(epochs=epochs, warmup_epochs=1, freeze_last_layer=1),
                        LossConfig(warmup_teacher_temp_epochs=2), steps_per_epoch)
    by_steps = Plan.of(OptimConfig(total_steps=total, warmup_steps=steps_per_epoch,
                                   freeze_last_layer_steps=steps_per_epoch),
                       LossConfig(warmup_teacher_temp_steps=2 * steps_per_epoch), steps_per_epoch)
    by_fraction = Plan.of(OptimConfig(epochs=epochs, warmup_fraction=1 / epochs, freeze_last_layer_fraction=1 / epochs),
                          LossConfig(warmup_teacher_temp_fraction=2 / epochs), steps_per_epoch)
    assert by_epochs == by_steps == by_fraction
    assert by_epochs.warmup == steps_per_epoch and by_epochs.teacher_temp_warmup == 2 * steps_per_epoch
    for step in range(total + 1):
        assert cosine(step, by_steps.total, 1.0, 0.0, by_steps.warmup) == cosine(step, total, 1.0, 0.0, steps_per_epoch)


def test_fraction_forms_do_not_depend_on_the_dataset_size():
    """A warm-up of 10 % of a 600-step run is 60 steps whether an epoch is 31 steps (8k images) or 234 (60k)."""
    optim = OptimConfig(total_steps=600, warmup_fraction=0.1, freeze_last_layer_fraction=0.2)
    loss = LossConfig(warmup_teacher_temp_fraction=0.3)
    small, large = Plan.of(optim, loss, 31), Plan.of(optim, loss, 234)
    assert (small.total, small.warmup, small.freeze_last_layer, small.teacher_temp_warmup) == (600, 60, 120, 180)
    assert (small.total, small.warmup, small.freeze_last_layer, small.teacher_temp_warmup) == \
        (large.total, large.warmup, large.freeze_last_layer, large.teacher_temp_warmup)


def test_teacher_temperature_in_steps():
    assert teacher_temperature(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(5, 0, 0.04, 0.07) == pytest.approx(0.07)


# ---- warm-up, stable, decay ----------------------------------------------------------------------

from dinolite.config import Config  # noqa: E402
from dinolite.errors import UserError  # noqa: E402
from dinolite.maths.schedules import warmup_stable_decay  # noqa: E402
from dinolite.methods.base import Schedule  # noqa: E402


def test_wsd_holds_the_peak_then_falls_along_a_half_cosine():
    total, warmup, decay = 100, 10, 20
    values = [warmup_stable_decay(s, total, 1.0, 0.1, warmup, decay) for s in range(total + 1)]
    for s, v in enumerate(values):  # the shape written from its definition
        if s < warmup:
            want = s / warmup
        elif s < total - decay:
            want = 1.0
        else:
            want = 0.1 + 0.45 * (1 + math.cos(math.pi * (s - (total - decay)) / decay))
        assert v == pytest.approx(want)
    assert values[total] == pytest.approx(0.1) and values[total - decay] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1:]))
    assert warmup_stable_decay(500, total, 1.0, 0.1, warmup, decay) == pytest.approx(0.1)
    # a decay as long as the run after the warm-up is DINO's cosine
    assert [warmup_stable_decay(s, total, 1.0, 0.1, warmup, total - warmup) for s in range(total + 1)] == \
        pytest.approx([cosine(s, total, 1.0, 0.1, warmup) for s in range(total + 1)])


def test_schedule_takes_the_lr_shape_from_the_config():
    cfg = Config()
    cfg.optim.lr, cfg.optim.min_lr, cfg.optim.lr_schedule, cfg.optim.lr_decay_fraction = 0.001, 0.0, "wsd", 0.25
    plan = Plan(total=200, steps_per_epoch=10, warmup=20, teacher_temp_warmup=0, freeze_last_layer=0)
    lrs = [Schedule.at(cfg, s, plan, global_batch=256).lr for s in (20, 100, 149, 150, 175, 200)]
    assert lrs[:4] == pytest.approx([0.001] * 4) and lrs[4] == pytest.approx(0.0005) and lrs[5] == pytest.approx(0)
    cfg.optim.lr_schedule = "cosine"  # DINO's: half way through the cosine part, half the peak
    assert Schedule.at(cfg, 110, plan, global_batch=256).lr == pytest.approx(0.0005)


@pytest.mark.parametrize("key, value", [("lr_schedule", "linear"), ("lr_decay_fraction", 0.0),
                                        ("lr_decay_fraction", 1.5)])
def test_bad_lr_shape_is_refused_with_its_key(key, value):
    from dinolite.checks import validate
    cfg = Config()
    setattr(cfg.optim, key, value)
    with pytest.raises(UserError, match=f"optim.{key}"):
        validate(cfg)
