"""A resume is checked against the run its directory holds before anything is written: another model or
data is refused in one line (config.yaml unchanged), another schedule length needs an explicit opt-in
and is recorded in the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dinolite.config import load_config
from dinolite.engine.rundir import changed
from dinolite.errors import UserError
from dinolite.pretraining.train import Pretrainer, pretrain
from tests.helpers import tiny_config, tiny_overrides

QUICK = {"eval.knn_at_end": False, "train.threads": 1}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped (with its checkpoint) at step 4 of 8."""
    run = tmp_path_factory.mktemp("rundir") / "run"
    pretrain(tiny_config(run, **{**QUICK, "train.stop_after_steps": 4}), progress=False)
    return run


def snapshot(run) -> dict:
    """Every file's bytes (the lock file names its latest holder: not part of the run)."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


def test_changed_lists_only_the_watched_keys_that_differ():
    a = load_config("quickstart", ["model.embed_dim=64", "optim.lr=0.1"])
    b = load_config("quickstart", ["model.embed_dim=32", "optim.lr=0.2"])
    assert changed(a, b, ("model",)) == {"model.embed_dim": [64, 32]}
    assert changed(a, b, ("model.depth", "optim.epochs")) == {}


@pytest.mark.slow
def test_another_model_shape_on_resume_is_one_line_and_writes_nothing(stopped_run):
    before = snapshot(stopped_run)
    cmd = [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress",
           *tiny_overrides(stopped_run, **{**QUICK, "model.embed_dim": 48, "augment.local_crops_number": 4})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "holds checkpoints of another model or data" in lines[0]
    assert "augment.local_crops_number 2 -> 4" in lines[0] and "model.embed_dim 32 -> 48" in lines[0]
    assert snapshot(stopped_run) == before  # config.yaml, checkpoints and metrics untouched
    knn = subprocess.run([sys.executable, "-m", "dinolite.cli", "knn", str(stopped_run), "--device", "cpu",
                          "--no-progress", "--no-cache", "--k", "5"], capture_output=True, text=True, timeout=300)
    assert knn.returncode == 0, knn.stderr[-3000:]  # the run is still readable as it was


def test_another_schedule_length_needs_the_opt_in_and_is_recorded(stopped_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    before = snapshot(run)
    with pytest.raises(UserError, match=r"another schedule length \(optim.epochs 2 -> 3\).*train.resume_schedule_change=true"):
        Pretrainer(tiny_config(run, **{**QUICK, "optim.epochs": 3}), progress=False)
    assert snapshot(run) == before
    pretrain(tiny_config(run, **{**QUICK, "optim.epochs": 3, "train.resume_schedule_change": True}), progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    changes = [r for r in records if "schedule_change" in r]
    assert changes == [{"step": 4, "schedule_change": {"optim.epochs": [2, 3]}}]
    assert max(r["step"] for r in records) == 12 and (run / "checkpoint-00000012.pt").is_file()


def test_settings_that_change_neither_shapes_nor_schedule_resume_freely(stopped_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    trainer = Pretrainer(tiny_config(run, **{**QUICK, "optim.lr": 0.001, "train.log_every": 2}), progress=False)
    assert trainer.step == 4
