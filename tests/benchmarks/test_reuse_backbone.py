"""benchmarks/reuse_backbone.py at a tiny size: the continuations and the from-scratch run, from one backbone-only
source, and the JSON holds the source's k-NN, each run's online k-NN curve and its banner (warm-up on, and off for
the naive run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layouts.sources import hf_folder, tiny_vit

ROOT = Path(__file__).resolve().parents[2]
# Each run 6 steps, not the benchmark's wall-clock budget (its --minutes; 18 s a run at 0.3, and too few steps
# for the plan on a loaded machine): the later overrides win, so the budget the benchmark sets is 0 and the run's
# length is the step count. float32 without train.precision=fastest's timing, 20 steps longer than the run.
STEPS = ["train.budget_minutes=0", "optim.total_steps=6", "train.precision=fp32"]


@pytest.mark.slow
def test_the_benchmark_runs_every_variant_at_a_tiny_size(tmp_path):
    source = hf_folder(tmp_path / "hf", tiny_vit(in_chans=1), 1)
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reuse_backbone.py"), str(source), "--tiny",
                           "--online-every", "2", "--datasets", "digits", "--out", str(tmp_path / "runs"),
                           "--json", str(out), "--set", *STEPS],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["run"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"digits/backbone-warmup", "digits/backbone-naive", "digits/scratch"}
    for r in results.values():
        assert "error" not in r, r
        assert r["steps"] == 6, r  # the step count, not a budget, set the run's length
        assert r["dataset"] == "digits" and 0 < r["source_knn"] <= 100 and r["online_knn"]
        assert 0 < r["final"]["knn_top1"] <= 100
    assert "heads warm up on the frozen backbone for 0.1" in results["digits/backbone-warmup"]["banner"][0]
    assert "no head warm-up" in results["digits/backbone-naive"]["banner"][0]
