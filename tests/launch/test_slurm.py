"""Pretraining through submitit on a real SLURM cluster: a 2-task job, preemption and requeue, a kill without
warning, a bad partition, and the launcher's refusals before anything is queued."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from launch.slurm import main, submit
from tests.helpers import tiny_overrides
from tests.launch.helpers import TWO_CPU_TASKS, finish, rank0_log, steps, wait_for


def job_args(run_dir: Path, **extra) -> list[str]:
    """A 2-task pretraining job of the tiny recipe (no kind named: pretraining is the default)."""
    over = {"model.drop_path_rate": 0.0, "eval.knn_at_end": False, "train.threads": 1, **extra}
    return [*TWO_CPU_TASKS, *tiny_overrides(run_dir, **over)]


@pytest.mark.cluster
def test_two_task_job_runs_as_two_ranks(slurm_cluster, tmp_path):
    run = tmp_path / "run"
    job = submit(job_args(run))
    assert finish(job, run) == [{}, {}]  # knn_at_end is off: both ranks return no figures
    state = torch.load(run / "checkpoint-00000008.pt", map_location="cpu", weights_only=True)
    assert state["world"] == 2 and state["step"] == 8
    logs = {p.name: p.read_text() for p in (run / "slurm").glob(f"{job.job_id}_*_log.out")}
    assert "global_rank=1(2)" in logs[f"{job.job_id}_1_log.out"]
    record = json.loads((run / "slurm_jobs.jsonl").read_text())
    assert record["job_id"] == job.job_id and record["kind"] == "pretrain" and (run / "config.yaml").is_file()


@pytest.mark.cluster
def test_preempted_job_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    run = tmp_path / "run"
    job = submit(job_args(run, **{"data.subset": 512}))  # 16 steps an epoch, 32 in all
    wait_for(lambda: len(steps(run)) >= 6, "6 training steps")
    job._interrupt()  # what SLURM does to a preempted job: TERM, then USR2
    finish(job, run)
    log = rank0_log(run)
    saved = re.search(r"preempted: checkpoint at step (\d+) written", log)
    resumed = re.search(r"resumed from \S+ at step (\d+)", log)
    assert saved and resumed, log[-3000:]
    assert int(resumed.group(1)) == int(saved.group(1)) >= 6  # it went on from there, not from 0
    assert "finished at step 32/32" in log
    assert sorted(steps(run)) == list(range(1, 33))  # every step exactly once: as many as an uninterrupted run


@pytest.mark.cluster
def test_job_killed_without_warning_resumes_from_periodic_checkpoint(slurm_cluster, tmp_path):
    run = tmp_path / "run"
    # 128 steps: scontrol's TERM is ignored and KILL follows KillWait (5 s) later; the run must outlast that
    job = submit(job_args(run, **{"data.subset": 2048, "train.checkpoint_every_minutes": 0.001}))
    wait_for(lambda: any(int(p.stem.split("-")[1]) >= 6 for p in run.glob("checkpoint-*.pt")), "a checkpoint")
    # TERM (which submitit ignores) then KILL: no checkpoint() call; the job restarts from its original pickle
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, capture_output=True)
    finish(job, run)
    log = rank0_log(run)
    resumed = re.search(r"resumed from \S+ at step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 6, log[-3000:]
    assert "preempted: checkpoint" not in log
    assert "finished at step 128/128" in log
    assert set(steps(run)) == set(range(1, 129))  # steps after the last checkpoint were redone, none skipped


@pytest.mark.cluster
def test_unknown_partition_is_one_line_from_slurm(slurm_cluster, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--partition", "no-such-partition", *tiny_overrides(run)]) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("launch.slurm: error:")]
    assert len(ours) == 1 and "invalid partition specified: no-such-partition" in ours[0]
    assert not run.exists()  # nothing left behind for a job that never existed


@pytest.mark.parametrize("argv, message", [
    (["--tasks-per-node", "3", "optim.batch_size=32"], "not divisible by the 3 processes"),
    (["--gpus-per-node", "2", "--tasks-per-node", "1"], "one process per GPU"),
])
def test_launcher_refuses_before_queueing(tmp_path, argv, message, capsys):
    assert main([*argv, f"train.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_no_slurm_client_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without sbatch/srun/sinfo
    run = tmp_path / "run"
    assert main(tiny_overrides(run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no SLURM client here (sbatch, srun, sinfo not found" in err[0] and "--local" in err[0]
    assert not run.exists()


def test_a_cluster_that_does_not_answer_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """The client tools exist but the controller is down: sinfo fails, the launcher says so before writing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    down = "echo 'sinfo: error: Unable to contact slurm controller (connect failure)' >&2; exit 1"
    for tool, body in (("sbatch", "exit 0"), ("srun", "exit 0"), ("sinfo", down)):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    run = tmp_path / "run"
    assert main(tiny_overrides(run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unable to contact slurm controller" in err[0], err
    assert not run.exists()
