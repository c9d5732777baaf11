"""One process per run directory: a second `dinolite pretrain` on the same directory stops at once with one
line naming the holder, writes nothing; the lock goes with its process (kill -9 leaves nothing stale)."""

from __future__ import annotations

import signal
import time

import pytest

from dinolite.cli import main
from tests.forked import Forked
from tests.helpers import tiny_overrides


def start(run, **extra) -> Forked:
    """``dinolite pretrain`` in a process of its own, forked ready-imported (tests/forked.py: no start-up)."""
    return Forked(["pretrain", "--no-progress", *tiny_overrides(run, **extra)])


def wait_for(path, timeout=120.0):
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    long = {"optim.epochs": 200, "train.threads": 1}
    first = start(run, **long)
    try:
        wait_for(run / "metrics.jsonl")  # the first run is training
        first.send_signal(signal.SIGSTOP)  # paused mid-training, holding the lock: no core of its own meanwhile
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != "metrics.jsonl"}
        second = start(run, **{**long, "optim.lr": 0.01})
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err[-2000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "is in use by pid" in lines[0] and f"pid {first.pid} " in lines[0], lines
        after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != "metrics.jsonl"}
        assert {k: v for k, v in after.items() if k in before} == before  # config.yaml etc. untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 released the lock: the run resumes in another process (this one: no start-up), and stale temp
    # files are cleared
    (run / ".config.yaml.tmp-99999").write_text("half a write")
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"optim.epochs": 200,
                                                                      "train.stop_after_steps": 1})]) == 0
    assert not (run / ".config.yaml.tmp-99999").exists()


def test_each_step_appears_once_in_the_metrics_after_a_resume(tmp_path):
    """A run killed after writing metrics past its last checkpoint resumes from that checkpoint: the records
    it wrote after it are dropped, so metrics.jsonl holds each step once (a cut last line is dropped too)."""
    import json

    from dinolite.engine import checkpoint as ckpt
    from dinolite.pretraining.train import pretrain
    from tests.helpers import tiny_config

    run = tmp_path / "run"
    pretrain(tiny_config(run, **{"eval.knn_at_end": False}), progress=False)  # 8 steps, checkpoints at 4 and 8
    ckpt.list_checkpoints(run)[-1].unlink()  # as if killed between the metrics of steps 5-8 and checkpoint 8
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "lo')  # and a line cut mid-write
    pretrain(tiny_config(run, **{"eval.knn_at_end": False}), progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
