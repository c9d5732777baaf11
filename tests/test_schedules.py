import math

import pytest

from dinolite.schedules import cosine, scaled_lr


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
