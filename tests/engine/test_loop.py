"""The engine's loop under faults, with real processes: kill -9 at random moments, then resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import tiny_overrides

# 24 steps (6 epochs of 4), a checkpoint due at every log step (every step), so a kill can land anywhere:
# in a step, in a checkpoint's write, in the metrics, in the final export.
FAULTS = {"optim.epochs": 6, "train.log_every": 1, "train.checkpoint_every_minutes": 1e-6, "train.keep_checkpoints": 2,
          "eval.knn_at_end": False, "train.threads": 1}


def command(run) -> list[str]:
    return [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", *tiny_overrides(run, **FAULTS)]


def start(run) -> subprocess.Popen:
    return subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def final_weights(run) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint-00000024.pt", map_location="cpu", weights_only=True)
    return {**{f"student.{k}": v for k, v in state["student"].items()},
            **{f"teacher.{k}": v for k, v in state["teacher"].items()}, "center": state["loss"]["center"]}


def logged_steps(run) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if line.endswith("}") and '"loss"' in line]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_exact(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run(command(reference), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    rng = random.Random(0)
    kills, progressed = 0, 0
    while True:
        proc = start(run)
        if kills < 5:
            lock, deadline = run / ".lock", time.time() + 120
            while proc.poll() is None and f"pid {proc.pid} " not in (lock.read_text() if lock.exists() else ""):
                assert time.time() < deadline  # this process holds the run directory: it is about to train
                time.sleep(0.01)
            before = logged_steps(run)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None and kills < 5:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            progressed += len(logged_steps(run)) > len(before)
            continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        break
    assert kills >= 3 and progressed >= 2  # killed mid-training, not only while starting

    wa, wb = final_weights(reference), final_weights(run)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert logged_steps(run) == list(range(1, 25))  # each step once, in order
    assert not list(run.glob(".*.tmp*"))  # no temporary file of an interrupted write is left
    assert (run / "teacher_backbone.safetensors").is_file()
