"""The monitor that says early when a run stops learning (the metrics themselves: loggers.py).

It reads, at every log step, the teacher's entropy H and the KL of its mean output to uniform, both averaged
over the whole log interval (``DINOMethod.teacher_figures``), and at every online evaluation the online k-NN
beside the same network at random initialisation. Every threshold below comes from real runs whose traces
are kept in tests/fixtures/ (tests/test_monitor.py replays them; docs/learning.md, "The monitor").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# Uniform collapse under DINO's center: H >= 0.85 ln K *and* KL <= 0.5. The collapsed runs (the sweep's base
# and lr1: tests/fixtures/collapse_fmnist10k_quickstart.jsonl, sweep_lr1_fmnist10k.jsonl) sat at 0.87-0.90 ln K
# with a KL of 0.18-0.45 from the LR peak on (lr1 went below 0.3 only after step 140: hence 0.5, not 0.3); the runs with
# DINO's center that did not collapse kept H at or below 0.76 ln K, and a KL of 0.95 or more.
UNIFORM_ENTROPY = 0.85  # fraction of ln K
UNIFORM_KL = 0.5
# Under Sinkhorn-Knopp the targets are balanced over the batch by construction, and the teacher's own centred
# softmax follows: runs that learned well show a small KL throughout (Animal-Shape continued from the quickstart's
# teacher: H 0.85-0.87 ln K with KL 0.12-0.18 while its k-NN rose 23 points, the false alarm of docs/reuse.md;
# from scratch: H 0.77-0.84 ln K, KL 0.24-0.54; all of Fashion-MNIST: H 0.73-0.80 ln K, KL 0.33-0.80). The KL says
# nothing there, so the uniform check reads the entropy alone, above the highest of those healthy runs (0.87);
# the sweep's "sk" run, whose features collapsed, sat at 0.91 ln K (H 6.3).
UNIFORM_ENTROPY_SK = 0.9  # fraction of ln K
# One-dimension collapse: the mean output sits on a handful of outputs, KL >= 0.7 ln K (ln K - KL = ln of the
# outputs the batch uses: at most e^(0.3 ln K), 8 of 1,024). The sweep's m95 reached 0.77 ln K (KL 5.3, H 1.0)
# by step 120 (0.80-0.88 ln K in its rerun); the sharpest run that learned (KoLeo,
# tests/fixtures/healthy_fmnist10k_koleo.jsonl) 0.65 ln K.
ONE_DIM_KL = 0.7  # fraction of ln K
# ... and it has no healthy look-alike, so it needs fewer checks than the uniform one (which borders on the
# high-entropy start of Sinkhorn-Knopp runs): m95's teacher spent two log intervals there (steps 101-120, KL
# 0.80-0.88 ln K) before swinging into the opposite collapse; 2 of 3 checks catch it there.
ONE_DIM_PATIENCE = 2
# Not learning: the online k-NN at or below random init plus KNN_Z standard errors of a k-NN on n queries,
# sqrt(p (1 - p) / n) at the random network's accuracy p: 1.5 points with 1,000 queries at p = 0.65, so a
# run 0.3 points above random init (the sweep's f50: 62.7 % against 62.4 %) counts as not learning, and one
# 5 points above (the current recipe by its second evaluation) does not.
KNN_Z = 2.0


def knn_margin(random_init: float, queries: int, z: float = KNN_Z) -> float:
    """Points above the random network's online k-NN (in %) that a k-NN on ``queries`` images must pass to
    count as learning: ``z`` binomial standard errors at the random network's accuracy."""
    p = min(max(random_init / 100, 0.0), 1.0)
    return 100 * z * math.sqrt(p * (1 - p) / max(queries, 1))


def is_uniform(entropy: float, kl: float, max_entropy: float, centering: str = "center") -> bool:
    """Every image gets the same flat target: H near ln K and, under DINO's center, a mean output near uniform.
    Under Sinkhorn-Knopp the KL is near 0 by construction, so H alone decides, against a higher bar."""
    if centering == "sinkhorn_knopp":
        return entropy >= UNIFORM_ENTROPY_SK * max_entropy
    return entropy >= UNIFORM_ENTROPY * max_entropy and kl <= UNIFORM_KL


def is_one_dimension(kl: float, max_entropy: float) -> bool:
    """The mean teacher output concentrated on a handful of its K outputs."""
    return kl >= ONE_DIM_KL * max_entropy


@dataclass
class Sustained:
    """The recent checks of one kind of failure: it fires when ``patience`` of the last ``2 * patience - 1``
    checks were bad. A majority in a window, not a run of consecutive checks: a figure hovering about its
    threshold does not reset the count at each crossing (a consecutive count never warns on a KL of 0.28,
    0.32, 0.28, 0.32, ... about a threshold of 0.3). After firing it
    stays quiet until ``patience`` good checks in a row (a sustained recovery) re-arm it, so a relapse warns
    again and a noisy stretch does not warn at every bad check."""

    patience: int
    recent: deque = field(default_factory=deque)
    firing: bool = False
    good_in_a_row: int = 0

    @property
    def window(self) -> int:
        return 2 * self.patience - 1

    @property
    def bad(self) -> int:
        return sum(self.recent)

    def add(self, bad: bool) -> bool:
        """One check; True when this one makes the failure sustained (the moment to warn)."""
        self.recent.append(bad)
        while len(self.recent) > self.window:
            self.recent.popleft()
        self.good_in_a_row = 0 if bad else self.good_in_a_row + 1
        if self.firing:
            if self.good_in_a_row >= self.patience:  # recovered: a new sustained failure warns again
                self.firing = False
                self.recent.clear()
            return False
        if self.bad >= self.patience:
            self.firing = True
            return True
        return False


class CollapseMonitor:
    """Warns when the run shows one of three failures for a sustained stretch (each kind again after a recovery).

    - uniform collapse: the teacher's entropy near log(K) and its mean output near uniform (too much
      centering, too soft a teacher); under Sinkhorn-Knopp centering the entropy alone (``is_uniform``);
    - one-dimension collapse: the mean teacher output concentrated on few dimensions (too much sharpening);
    - not learning: the online k-NN within the noise of ``queries`` test images of the same architecture at
      random initialisation (``knn_margin``).

    When it starts: the teacher checks (uniform, one-dimension) count from the first log interval in which the
    teacher has left the uniform output of initialisation (H below the uniform threshold: it has something to
    say, and a return to flat is a collapse, not the starting point), or from the end of the LR warm-up
    (``warmup``), whichever comes first: a teacher still flat when the LR has peaked is not going to leave.
    The k-NN check counts from the end of the warm-up: early DINO training trades the random features' pixel
    structure for coarse clusters before it improves on them (the recorded runs dip 2-6 points below random
    init during the warm-up and pass it after). Not after the last-layer freeze as before: in the quickstart
    that was half of the run, too late to be worth a warning.

    ``patience`` counts log intervals for the uniform check (``train.collapse_patience``), ``one_dim_patience``
    for the one-dimension check, ``knn_patience`` online evaluations (fewer: there are 4-8 in a run); each as a
    ``Sustained`` window.
    """

    def __init__(self, out_dim: int, patience: int = 5, knn_patience: int = 2, warmup: int = 0,
                 queries: int = 1000, centering: str = "center", one_dim_patience: int = ONE_DIM_PATIENCE):
        self.max_entropy = math.log(out_dim)
        self.warmup, self.queries, self.centering = warmup, queries, centering
        self.checks = {"uniform": Sustained(patience), "one-dimension": Sustained(min(one_dim_patience, patience)),
                       "no-learning": Sustained(knn_patience)}
        self.teacher_from: int | None = None  # the step of the first teacher check that counted

    def teacher_started(self, step: int, entropy: float) -> bool:
        """Whether the teacher checks count from this log interval on (see the class docstring)."""
        if self.teacher_from is None:
            flat = UNIFORM_ENTROPY_SK if self.centering == "sinkhorn_knopp" else UNIFORM_ENTROPY
            if entropy < flat * self.max_entropy or step >= self.warmup:
                self.teacher_from = step
        return self.teacher_from is not None

    def update(self, step: int, entropy: float, kl: float) -> str | None:
        """One log interval's mean teacher statistics; returns a warning when a collapse becomes sustained."""
        if not self.teacher_started(step, entropy):
            return None
        kmax, uniform, one_dim = self.max_entropy, self.checks["uniform"], self.checks["one-dimension"]
        # both windows see every interval, whichever of them warns
        flat = uniform.add(is_uniform(entropy, kl, kmax, self.centering))
        narrow = one_dim.add(is_one_dimension(kl, kmax))
        if flat:
            alone = self.centering == "sinkhorn_knopp"
            sign = f"{entropy:.2f} of {kmax:.2f}" + (" (Sinkhorn-Knopp centering: the entropy alone)" if alone
                                                     else f" with KL to uniform {kl:.2f}")
            return (f"uniform collapse: in {uniform.bad} of the last {len(uniform.recent)} checks the teacher's "
                    f"entropy was near its maximum (now {sign}), so every image gets the same flat target; lower "
                    f"optim.lr or loss.teacher_temp, lengthen optim.warmup_fraction and "
                    f"optim.freeze_last_layer_fraction, or lower model.out_dim")
        if narrow:
            return (f"one-dimension collapse: in {one_dim.bad} of the last {len(one_dim.recent)} checks the "
                    f"teacher's mean output sat on a few dimensions (KL to uniform now {kl:.2f} of {kmax:.2f}); "
                    f"raise optim.momentum_teacher (a slower teacher), lower loss.center_momentum (faster "
                    f"centering) or raise loss.teacher_temp")
        return None

    def update_knn(self, step: int, knn: float, random_init: float) -> str | None:
        """One online k-NN figure against the random-init one; warns when it stays within the k-NN's noise of it."""
        if step < self.warmup:
            return None
        margin = knn_margin(random_init, self.queries)
        check = self.checks["no-learning"]
        if check.add(knn <= random_init + margin):
            return (f"not learning: in {check.bad} of the last {len(check.recent)} online evaluations after the "
                    f"warm-up the k-NN (now {knn:.1f} %) was within {margin:.1f} points of the same network at "
                    f"random init ({random_init:.1f} %; {KNN_Z:g} standard errors on {self.queries} queries); "
                    f"check the augmentations against the data, lower optim.lr, or lengthen the warm-up")
        return None


def monitors_for(suffixes: list[str], out_dim: int, patience: int, warmup: int, queries: int,
                 centering: str) -> dict[str, CollapseMonitor]:
    """One monitor per trained backbone (by metric suffix; DINO's teacher is ``""``), as a run builds them: each
    one's online k-NN is judged against its own random init, within the noise of ``queries`` test images."""
    return {suffix: CollapseMonitor(out_dim, patience, warmup=warmup, queries=queries, centering=centering)
            for suffix in suffixes}


def feed(monitors: dict[str, CollapseMonitor], record: dict, baselines: dict[str, float]) -> list[str]:
    """One log record (``step``, ``teacher_entropy``, ``kl_uniform``, ``knn_online<suffix>``) through a run's
    monitors (one per trained backbone, by suffix; DINO's teacher is ``""``): the warnings it gives. A backbone's
    k-NN is judged against the run's baseline ``knn_online_random_init<suffix>`` (absent: not judged). The step
    where the teacher's checks began is added to ``record`` (``monitor_from_step``) once. Training,
    :func:`replay` and the fixture benchmark all call this."""
    warnings: list[str | None] = []
    step = record["step"]
    if "teacher_entropy" in record and "" in monitors:
        monitor = monitors[""]
        started = monitor.teacher_from is not None
        warnings.append(monitor.update(step, record["teacher_entropy"], record["kl_uniform"]))
        if not started and monitor.teacher_from is not None:  # recorded once: where the checks began
            record["monitor_from_step"] = monitor.teacher_from
    for suffix, monitor in monitors.items():
        knn, random_init = record.get(f"knn_online{suffix}"), baselines.get(f"knn_online_random_init{suffix}")
        if knn is not None and random_init is not None:
            warnings.append(monitor.update_knn(step, knn, random_init))
    return [w for w in warnings if w]


def replay(records: list[dict], monitor: CollapseMonitor, random_init: float | None = None) -> list[tuple[int, str]]:
    """A run's metrics.jsonl records (step, teacher_entropy, kl_uniform, knn_online) through ``monitor``, as
    ``dinolite pretrain`` feeds it (:func:`feed`): the warnings it gives, with their steps. ``random_init``: the
    random network's online k-NN (None: the k-NN figures are not judged)."""
    baselines = {} if random_init is None else {"knn_online_random_init": random_init}
    return [(r["step"], w) for r in records for w in feed({"": monitor}, dict(r), baselines)]
