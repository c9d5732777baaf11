import math

from dinolite.monitor import CollapseMonitor


def test_warns_once_after_sustained_uniform_entropy():
    m = CollapseMonitor(out_dim=100, patience=3)
    high = math.log(100) * 0.995
    assert [m.update(high) for _ in range(2)] == [None, None]
    assert "uniform collapse" in m.update(high)
    assert m.update(high) is None  # warned once


def test_interrupted_stretch_resets_and_low_entropy_warns():
    m = CollapseMonitor(out_dim=100, patience=3)
    for value in (0.01, 0.01, 2.0, 0.01, 0.01):
        assert m.update(value) is None
    assert "one-dimension collapse" in m.update(0.01)
