"""Waiting for jobs on the local SLURM cluster and reading what they wrote (shared by the launcher tests)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# timeout_min=60: below about 50 minutes submitit counts every USR2 as a time-out, not a preemption.
TWO_CPU_TASKS = ["--tasks-per-node", "2", "--cpus-per-task", "1", "--timeout-min", "60"]


def steps(run_dir: Path) -> list[int]:
    """The steps of the training records in ``run_dir/metrics.jsonl`` (none before it exists)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def finish(job, run_dir: Path, tasks: int = 2) -> list:
    """Wait until every task wrote its result and the job left the queue; return the results.

    Polls the files rather than ``job.results()``: without accounting, submitit cannot read the job's
    state, and a job that was just requeued can look finished to it.
    """
    results = [run_dir / "slurm" / f"{job.job_id}_{t}_result.pkl" for t in range(tasks)]
    queued = lambda: job.job_id in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,  # noqa: E731
                                                  text=True).stdout.split()
    wait_for(lambda: not queued(), f"job {job.job_id} to leave the queue", 240)
    assert all(p.exists() for p in results), rank0_log(run_dir)[-3000:] + err_logs(run_dir)
    return job.results()


def err_logs(run_dir: Path) -> str:
    return "".join(p.read_text()[-2000:] for p in sorted((run_dir / "slurm").glob("*_log.err")))


def rank0_log(run_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted((run_dir / "slurm").glob("*_0_log.out")))
