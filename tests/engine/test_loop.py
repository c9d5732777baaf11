"""The engine's loop under faults, with real processes: kill -9 at random moments, then resume."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch

from dinolite.cli import main
from tests.forked import Forked
from tests.helpers import tiny_overrides

# 24 steps (6 epochs of 4), a checkpoint due at every log step (every step), so a kill can land anywhere in the
# loop: in a step, in a checkpoint's write, in the metrics; or while the process sets up.
FAULTS = {"optim.epochs": 6, "train.log_every": 1, "train.checkpoint_every_minutes": 1e-6, "train.keep_checkpoints": 2,
          "eval.knn_at_end": False, "train.threads": 1}


def command(run) -> list[str]:
    return ["pretrain", "--no-progress", *tiny_overrides(run, **FAULTS)]


def start(run) -> Forked:
    return Forked(command(run))


def final_weights(run) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint-00000024.pt", map_location="cpu", weights_only=True)
    return {**{f"student.{k}": v for k, v in state["student"].items()},
            **{f"teacher.{k}": v for k, v in state["teacher"].items()}, "center": state["loss"]["center"]}


def logged_steps(run) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if line.endswith("}") and '"loss"' in line]


def holds_lock(run, pid: int) -> bool:
    lock = run / ".lock"
    return f"pid {pid} " in (lock.read_text() if lock.exists() else "")


def reached(run, step: int) -> bool:
    return max(logged_steps(run), default=0) >= step


def wait_until(proc: Forked, done, run, arg: int, what: str) -> None:
    """Poll ``done(run, arg)`` while ``proc`` runs (a failure with its stderr if it ends or hangs first)."""
    deadline = time.time() + 120
    while not done(run, arg):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the process ended or hung before {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_exact(tmp_path):
    """The uninterrupted run and the final resume run in this process (the same command); the three killed runs
    are processes of their own, forked ready-imported (tests/forked.py: no start-up). Each kill lands at a random
    moment within one step's time after a drawn step (the first maybe before any step): drawn steps, not seconds,
    so every kill lands before the run ends, whatever the machine's speed."""
    reference, run = tmp_path / "reference", tmp_path / "killed"
    began = time.time()
    assert main(command(reference)) == 0
    # a step with its checkpoint, the set-up and export spread over the steps: an upper bound (a pause cut short)
    period = min((time.time() - began) / 24, 0.25)

    rng = random.Random(0)
    first = rng.randint(0, 6)  # 0: while the process sets up, after it took the lock
    second = rng.randint(first + 3, 14)  # 3 apart: a kill lands at most 2 steps past its own, so each next one
    targets = [first, second, rng.randint(second + 3, 21)]  # trains first; the last leaves 2 steps and the export
    kills, progressed = 0, 0
    for target in targets:
        proc = start(run)
        # this process holds the run directory: it is about to train
        wait_until(proc, holds_lock, run, proc.pid, "it took the lock")
        before = logged_steps(run)
        wait_until(proc, reached, run, target, f"step {target}")
        time.sleep(rng.uniform(0.0, period))
        assert proc.poll() is None, proc.communicate()[1][-3000:]  # killed while running, not after it ended
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        progressed += len(logged_steps(run)) > len(before)
    assert main(command(run)) == 0
    assert kills >= 3 and progressed >= 2  # killed mid-training, not only while starting

    wa, wb = final_weights(reference), final_weights(run)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert logged_steps(run) == list(range(1, 25))  # each step once, in order
    assert not list(run.glob(".*.tmp*"))  # no temporary file of an interrupted write is left
    assert (run / "teacher_backbone.safetensors").is_file()
