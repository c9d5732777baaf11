"""The monitor on real teacher statistics: it fires early, with the right kind, on every recorded failure and
stays quiet on every recorded healthy run; and its rules (the start, the window, the k-NN's noise margin,
warning again after a relapse, Sinkhorn-Knopp) one by one.

The fixtures (tests/fixtures/*.jsonl) are real runs' metrics.jsonl records trimmed to what the monitor reads,
after a header line with the run's plan (planned steps, LR warm-up), its centering, its random-init online
k-NN and number of queries, the first warning expected (null: a healthy run) and the command that recorded
it; benchmarks/monitor_fixtures.py trims a run into one and prints how early the monitor fires on each
(docs/learning.md, "The monitor"):

- the sweep of docs/learning.md (Fashion-MNIST's first 10,000 images, the recipe of before: DINO's center,
  no KoLeo, no iBOT, 468 steps): base (uniform collapse), f50 (no collapse, not learning), koleo (healthy),
  and reruns of lr1 (drifting to uniform) and m95 (one-dimension) whose traces had not been kept;
- the current recipe (Sinkhorn-Knopp, KoLeo, iBOT) on the same 10,000 images, healthy and failing;
- the current recipe on Animal-Shape from scratch and continued from a Fashion-MNIST teacher (the false
  uniform-collapse alarm of docs/reuse.md), and on all of Fashion-MNIST (docs/reuse.md's runs).
"""

import json
import math
import sys
from pathlib import Path

import pytest

from dinolite.pretraining.monitor import CollapseMonitor, Sustained, is_uniform, knn_margin, replay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from monitor_fixtures import monitor_for, read_fixture, replay_fixture  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("*.jsonl"))
FAILING = [p for p in FIXTURES if read_fixture(p)[0]["expect"]]
HEALTHY = [p for p in FIXTURES if not read_fixture(p)[0]["expect"]]
KMAX = math.log(1024)


def test_the_fixtures_cover_the_sweeps_failures_and_the_current_recipe():
    runs = {read_fixture(p)[0]["run"] for p in FIXTURES}
    assert {"base", "f50", "lr1", "m95", "koleo"} <= runs
    headers = {p.stem: read_fixture(p)[0] for p in FIXTURES}
    current = [h for stem, h in headers.items() if "10k" in stem and h["centering"] == "sinkhorn_knopp"]
    assert sorted(bool(h["expect"]) for h in current) == [False, True]  # one healthy, one failing


@pytest.mark.parametrize("path", FAILING, ids=[p.stem for p in FAILING])
def test_warns_before_half_of_the_run_with_the_right_kind(path):
    header, records, fired = replay_fixture(path)
    assert fired, f"{path.stem}: no warning"
    expected = [step for step, w in fired if w.split(":")[0] == header["expect"]]
    assert expected, f"{path.stem}: warned {[w.split(':')[0] for _, w in fired]}, not {header['expect']}"
    assert fired[0][0] / header["total_steps"] < 0.5  # the first warning, whatever its kind
    assert expected[0] / header["total_steps"] < 0.5  # and the expected one


@pytest.mark.parametrize("path", HEALTHY, ids=[p.stem for p in HEALTHY])
def test_quiet_on_a_healthy_run(path):
    header, records, fired = replay_fixture(path)
    assert fired == []
    assert records[-1]["step"] == header["total_steps"]  # the whole run was recorded, not its start


def test_the_sinkhorn_knopp_false_alarm_is_gone():
    """docs/reuse.md: continued from a pretrained teacher on Animal-Shape, Sinkhorn-Knopp centering, H 0.86-0.87
    ln K with KL 0.12-0.18 while the k-NN rose 23 points; the center's rule (H and KL) reads it as uniform."""
    header, records = read_fixture(ROOT / "tests/fixtures/healthy_animalshape_continued_sk.jsonl")
    assert header["centering"] == "sinkhorn_knopp"
    assert replay(records, monitor_for(header), header["knn_online_random_init"]) == []
    as_center = monitor_for({**header, "centering": "center"})
    assert [w.split(":")[0] for _, w in replay(records, as_center)] == ["uniform collapse"]


def test_uniform_under_sinkhorn_knopp_reads_the_entropy_alone():
    assert not is_uniform(0.87 * KMAX, 0.12, KMAX, "sinkhorn_knopp")  # the continued Animal-Shape run
    assert is_uniform(0.87 * KMAX, 0.12, KMAX, "center")
    assert is_uniform(0.97 * KMAX, 0.0, KMAX, "sinkhorn_knopp") and is_uniform(0.97 * KMAX, 2.0, KMAX, "sinkhorn_knopp")


# ---- the start -------------------------------------------------------------------------------------------
def test_teacher_checks_start_once_the_teacher_has_left_uniform():
    m = CollapseMonitor(out_dim=1024, patience=2, warmup=100)
    assert m.update(20, 0.99 * KMAX, 0.01) is None and m.teacher_from is None  # flat at initialisation: not counted
    assert m.update(40, 0.99 * KMAX, 0.01) is None and m.teacher_from is None
    assert m.update(60, 0.5 * KMAX, 2.0) is None and m.teacher_from == 60  # it has something to say
    assert m.update(80, 0.9 * KMAX, 0.1) is None
    assert m.update(100, 0.9 * KMAX, 0.1).startswith("uniform collapse")  # back to flat: a collapse, mid warm-up


def test_a_teacher_flat_from_the_start_is_judged_from_the_end_of_the_warmup():
    m = CollapseMonitor(out_dim=1024, patience=2, warmup=100)
    assert [m.update(s, 0.95 * KMAX, 0.05) for s in (20, 40, 60, 80)] == [None] * 4
    assert m.update(100, 0.95 * KMAX, 0.05) is None and m.teacher_from == 100
    assert m.update(120, 0.95 * KMAX, 0.05).startswith("uniform collapse")


def test_knn_checks_start_at_the_end_of_the_warmup():
    m = CollapseMonitor(out_dim=1024, knn_patience=2, warmup=100, queries=1000)
    assert [m.update_knn(s, 40.0, 62.0) for s in (50, 99)] == [None, None]  # during the warm-up nothing counts
    assert m.update_knn(100, 40.0, 62.0) is None
    assert m.update_knn(150, 40.0, 62.0).startswith("not learning")


# ---- the window and warning again ------------------------------------------------------------------------
def test_a_kl_hovering_about_its_threshold_does_not_reset_the_count():
    """H flat, KL crossing 0.5 at every check (the old monitor counted consecutive checks: it never warned)."""
    m = CollapseMonitor(out_dim=1024, patience=3)
    kls = [0.45, 0.55, 0.45, 0.55, 0.45]
    warnings = [m.update(20 * (i + 1), 0.9 * KMAX, kl) for i, kl in enumerate(kls)]
    assert warnings[:4] == [None] * 4 and warnings[4].startswith("uniform collapse")
    assert "3 of the last 5 checks" in warnings[4]


def test_isolated_bad_checks_do_not_warn():
    s = Sustained(patience=3)
    assert not any(s.add(bad) for bad in [True, False, False, True, False, False, True, False, False] * 3)


def test_warns_again_after_a_recovery_and_a_relapse():
    s = Sustained(patience=3)
    assert [s.add(True) for _ in range(3)] == [False, False, True]
    assert [s.add(True) for _ in range(4)] == [False] * 4  # still failing: said once
    assert [s.add(False) for _ in range(2)] + [s.add(True)] == [False] * 3  # a short recovery re-arms nothing
    assert [s.add(False) for _ in range(3)] == [False] * 3  # recovered for `patience` checks: re-armed
    assert [s.add(True) for _ in range(3)] == [False, False, True]  # the relapse warns again


def test_each_kind_warns_again_through_the_monitor():
    m = CollapseMonitor(out_dim=1024, patience=2, knn_patience=2, warmup=0, queries=1000)
    stream = [(0.5 * KMAX, 2.0)] + [(0.9 * KMAX, 0.1)] * 2 + [(0.5 * KMAX, 2.0)] * 2 + [(0.9 * KMAX, 0.1)] * 2
    kinds = [w.split(":")[0] for s, (h, kl) in enumerate(stream) if (w := m.update(20 * (s + 1), h, kl))]
    assert kinds == ["uniform collapse", "uniform collapse"]
    knn = [62.0, 62.0, 75.0, 75.0, 62.0, 62.0]
    kinds = [w.split(":")[0] for s, k in enumerate(knn) if (w := m.update_knn(100 * (s + 1), k, 62.0))]
    assert kinds == ["not learning", "not learning"]


def test_one_dimension_collapse_warns_after_fewer_checks():
    m = CollapseMonitor(out_dim=1024, patience=5, one_dim_patience=2)
    warnings = [m.update(s, 0.01, 0.95 * KMAX) for s in (20, 40)]
    assert warnings[0] is None and warnings[1].startswith("one-dimension collapse")
    m = CollapseMonitor(out_dim=1024, patience=3, one_dim_patience=3)
    warnings = [m.update(s, 0.01, 0.95 * KMAX) for s in (20, 40, 60)]
    assert warnings[:2] == [None, None] and warnings[2].startswith("one-dimension collapse")


@pytest.mark.parametrize("entropy,kl", [(6.5, 1.2), (4.0, 0.1)])
def test_one_sign_alone_is_not_a_uniform_collapse(entropy, kl):
    """High entropy with a peaked mean, or a flat mean with sharp rows (a healthy, balanced teacher)."""
    m = CollapseMonitor(out_dim=1024, patience=2)
    assert [m.update(s, entropy, kl) for s in range(1, 6)] == [None] * 5


# ---- the k-NN's noise ------------------------------------------------------------------------------------
def test_the_margin_is_the_knn_noise_on_its_queries():
    assert knn_margin(62.4, 1000) == pytest.approx(200 * math.sqrt(0.624 * 0.376 / 1000))  # 3.06 points
    assert knn_margin(62.4, 100_000) == pytest.approx(knn_margin(62.4, 1000) / 10)  # 100 times the queries


def test_a_run_within_the_noise_of_random_init_warns_one_clearly_above_does_not():
    above_by = {0.3: True, 10.0: False}
    for margin, warns in above_by.items():
        m = CollapseMonitor(out_dim=1024, knn_patience=2, warmup=100, queries=1000)
        fired = [m.update_knn(s, 62.4 + margin, 62.4) for s in (100, 200, 300, 400)]
        assert any(fired) == warns, margin


def test_the_number_of_queries_comes_from_the_run():
    """1 point above random init: noise on 1,000 queries, a real gain on 100,000."""
    few = CollapseMonitor(out_dim=1024, knn_patience=1, queries=1000)
    many = CollapseMonitor(out_dim=1024, knn_patience=1, queries=100_000)
    assert few.update_knn(100, 63.4, 62.4) is not None and many.update_knn(100, 63.4, 62.4) is None


def test_the_pretraining_run_gives_the_monitor_its_queries_warmup_and_centering(tmp_path, fmnist_root):
    from dinolite.pretraining.train import Pretrainer
    from tests.helpers import tiny_config

    cfg = tiny_config(tmp_path / "run", **{"eval.online_every": 2, "eval.online_queries": 1000, "data.test_subset": 48,
                                           "eval.online_bank": 64, "optim.epochs": 1, "eval.knn_at_end": False})
    trainer = Pretrainer(cfg, progress=False)
    trainer.compute_baselines()
    trainer.fit()
    monitor = trainer._monitors[""]
    assert monitor.queries == 48  # the test split's 48 images, not the 1,000 asked for
    assert monitor.warmup == trainer.plan.warmup and monitor.centering == "sinkhorn_knopp"
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["monitor_from_step"] for r in rows if "monitor_from_step" in r] == [monitor.teacher_from]


if __name__ == "__main__":  # the table of docs/learning.md, "The monitor"
    from monitor_fixtures import results, table

    print(table(results(FIXTURES)))
