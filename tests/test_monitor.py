"""The monitor on real teacher statistics: it fires on a recorded collapse and stays quiet on a healthy run.

The fixtures are metrics.jsonl records (step, teacher entropy, KL to uniform, online k-NN) of real
runs, trimmed to those keys:
- collapse_fmnist10k_quickstart.jsonl: the epoch-based quickstart recipe of before on a 10,000-image
  Fashion-MNIST subset for 12 epochs (468 steps, warm-up 3 epochs): teacher k-NN 64.15 % against
  64.90 % at random init (10k bank, 2k queries); entropy 6.2 of 6.93 from step 140 on.
- not_learning_fmnist10k.jsonl: the same with the warm-up over 25 % and the last-layer freeze over
  50 % of the run: no collapse (entropy 4-5), but the teacher ends at 64.70 % against 64.90 % (online
  k-NN 62.7 % against 62.4 % at random init, 5,000 bank / 1,000 queries).
- healthy_fmnist10k_koleo.jsonl: as the previous one with KoLeo (weight 0.1) and milder crops: 74.70 %
  against 64.90 % (online k-NN 74.1 % against 62.4 %).
"""

import json
import math
from pathlib import Path

import pytest

from dinolite.monitor import CollapseMonitor

FIXTURES = Path(__file__).parent / "fixtures"


def replay(name: str, warmup: int, random_init: float | None = None) -> list[tuple[int, str]]:
    monitor = CollapseMonitor(out_dim=1024, patience=5, knn_patience=3, start_step=warmup)
    fired = []
    for line in (FIXTURES / name).read_text().splitlines():
        r = json.loads(line)
        for w in (monitor.update(r["step"], r["teacher_entropy"], r["kl_uniform"]),
                  monitor.update_knn(r["step"], r["knn_online"], random_init) if "knn_online" in r else None):
            if w:
                fired.append((r["step"], w))
    return fired


def test_fires_early_on_a_recorded_uniform_collapse():
    fired = replay("collapse_fmnist10k_quickstart.jsonl", warmup=117)
    assert len(fired) == 1
    step, warning = fired[0]
    assert warning.startswith("uniform collapse") and "optim.lr" in warning
    assert step <= 260  # of 468: with half the run still to go


def test_says_when_a_run_without_collapse_does_not_learn():
    fired = replay("not_learning_fmnist10k.jsonl", warmup=234, random_init=62.4)
    assert [w.split(":")[0] for _, w in fired] == ["not learning"]
    assert fired[0][0] <= 360  # of 468


def test_quiet_on_a_healthy_run():
    assert replay("healthy_fmnist10k_koleo.jsonl", warmup=234, random_init=62.4) == []


def test_online_knn_at_random_init_after_warmup_warns():
    m = CollapseMonitor(out_dim=1024, knn_patience=3, start_step=100)
    assert m.update_knn(50, 40.0, 62.0) is None  # during the warm-up nothing counts
    assert [m.update_knn(s, 61.0, 62.0) for s in (150, 200)] == [None, None]
    assert m.update_knn(250, 63.0, 62.0) is None  # a figure above random init resets the stretch
    assert [m.update_knn(s, 60.0, 62.0) for s in (300, 350)] == [None, None]
    assert m.update_knn(400, 62.0, 62.0).startswith("not learning")


def test_one_dimension_collapse_warns():
    m = CollapseMonitor(out_dim=1024, patience=3)
    kmax = math.log(1024)
    warnings = [m.update(s, 0.01, 0.95 * kmax) for s in (1, 2, 3)]
    assert warnings[:2] == [None, None] and warnings[2].startswith("one-dimension collapse")


@pytest.mark.parametrize("entropy,kl", [(6.5, 1.2), (4.0, 0.1)])
def test_one_sign_alone_is_not_a_uniform_collapse(entropy, kl):
    """High entropy with a peaked mean, or a flat mean with sharp rows (a healthy, balanced teacher)."""
    m = CollapseMonitor(out_dim=1024, patience=2)
    assert [m.update(s, entropy, kl) for s in range(1, 6)] == [None] * 5
