"""The monitor that says early when a run stops learning (the metrics themselves: loggers.py)."""

from __future__ import annotations

import math

# Thresholds, from the teacher statistics of real runs (tests/fixtures/*.jsonl, docs/learning.md):
# runs that learned kept the teacher's entropy at or below 0.77 log(K) with KL(mean P_t || uniform) of
# 0.7 or more after warm-up; the runs that ended below random init sat at 0.87-0.95 log(K) with a KL of
# 0.07-0.3. Both signs together mean "every image gets the same flat distribution".
UNIFORM_ENTROPY = 0.85  # fraction of log(K)
UNIFORM_KL = 0.3
ONE_DIM_KL = 0.8  # fraction of log(K): the mean output sits on a handful of dimensions


class CollapseMonitor:
    """Warns (once per kind) when, after the warm-up, the run shows one of three failures for a sustained stretch.

    - uniform collapse: the teacher's entropy near log(K) *and* its mean output near uniform (too
      much centering / too soft a teacher);
    - one-dimension collapse: the mean teacher output concentrated on few dimensions (too much sharpening);
    - not learning: the online k-NN at or below the same architecture at random initialisation.

    ``patience`` counts log intervals for the first two and online evaluations for the third
    (``knn_patience``). Checks before ``start_step`` (the end of the warm-up) do not count: at
    initialisation every teacher is uniform, and early DINO training trades the random features'
    pixel structure for coarse clusters before it improves on them.
    """

    def __init__(self, out_dim: int, patience: int = 5, knn_patience: int = 3, start_step: int = 0):
        self.max_entropy = math.log(out_dim)
        self.patience, self.knn_patience, self.start_step = patience, knn_patience, start_step
        self.runs = {"uniform": 0, "one-dimension": 0, "no-learning": 0}
        self.warned: set[str] = set()

    def _count(self, kind: str, bad: bool, patience: int) -> bool:
        self.runs[kind] = self.runs[kind] + 1 if bad else 0
        if self.runs[kind] >= patience and kind not in self.warned:
            self.warned.add(kind)
            return True
        return False

    def update(self, step: int, entropy: float, kl: float) -> str | None:
        """One log interval's teacher statistics; returns a warning the first time a collapse is sustained."""
        if step <= self.start_step:
            return None
        h, kmax = entropy / self.max_entropy, self.max_entropy
        uniform = h >= UNIFORM_ENTROPY and kl <= UNIFORM_KL
        if self._count("uniform", uniform, self.patience):
            return (f"uniform collapse: for {self.runs['uniform']} checks the teacher's entropy has stayed at "
                    f"{entropy:.2f} of {kmax:.2f} with KL to uniform {kl:.2f}, so every image gets the same flat "
                    f"target; lower optim.lr or loss.teacher_temp, lengthen optim.warmup_fraction and "
                    f"optim.freeze_last_layer_fraction, or lower model.out_dim")
        if self._count("one-dimension", kl >= ONE_DIM_KL * kmax, self.patience):
            return (f"one-dimension collapse: for {self.runs['one-dimension']} checks the teacher's mean output "
                    f"has sat on a few dimensions (KL to uniform {kl:.2f} of {kmax:.2f}); lower "
                    f"loss.center_momentum (faster centering) or raise loss.teacher_temp")
        return None

    def update_knn(self, step: int, knn: float, random_init: float) -> str | None:
        """One online k-NN figure against the random-init one; warns when it stays at or below it."""
        if step <= self.start_step:
            return None
        if self._count("no-learning", knn <= random_init, self.knn_patience):
            return (f"not learning: the online k-NN ({knn:.1f} %) has stayed at or below the same network at random "
                    f"init ({random_init:.1f} %) for {self.runs['no-learning']} evaluations after the warm-up; "
                    f"check the augmentations against the data, lower optim.lr, or lengthen the warm-up")
        return None
