"""Training metrics as JSON lines and the collapse monitor on the teacher's entropy."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (readable while the run goes on)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class CollapseMonitor:
    """Warns once when the teacher's entropy stays near 0 or near log(out_dim) for ``patience`` checks.

    Near log(K): the teacher's output is uniform (too much centering); near 0: one dimension wins
    every image (too much sharpening). Both mean the features stopped learning.
    """

    def __init__(self, out_dim: int, patience: int = 10, low: float = 0.05, high: float = 0.98):
        self.max_entropy = math.log(out_dim)
        self.patience, self.low, self.high = patience, low, high
        self.run_low = self.run_high = 0
        self.warned: set[str] = set()

    def update(self, entropy: float) -> str | None:
        frac = entropy / self.max_entropy
        self.run_low = self.run_low + 1 if frac < self.low else 0
        self.run_high = self.run_high + 1 if frac > self.high else 0
        for kind, run in (("uniform", self.run_high), ("one-dimension", self.run_low)):
            if run >= self.patience and kind not in self.warned:
                self.warned.add(kind)
                where = "near log(out_dim)" if kind == "uniform" else "near 0"
                return (f"possible {kind} collapse: the teacher's entropy has stayed {where} ({entropy:.3f} of "
                        f"{self.max_entropy:.3f}) for {run} checks; consider loss.teacher_temp, "
                        f"loss.center_momentum, optim.lr or model.out_dim")
        return None
