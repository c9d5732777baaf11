"""Fine-tuning through the SLURM launcher (``python -m launch.slurm finetune ...``) on the real local cluster:
a 2-task born-again job runs to its results; a job preempted in its second generation checkpoints at a step
boundary, is requeued and ends with the same results; refusals come before anything is queued or written;
and the preemption logic (written once for every kind of job) hooks each generation's engine."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dinolite.jobs import JOB_KINDS, Job
from launch.slurm import main, submit
from tests.finetune.helpers import ft_overrides, write_tiny_backbone
from tests.launch.helpers import TWO_CPU_TASKS, finish, rank0_log, steps, wait_for

RUN_NAME = "finetune_fmnist-born-again"  # the CLI's default run directory: runs/<recipe>-<method>
STEPS = 16  # per generation: 512 images, global batch 64, 2 epochs (a test-split evaluation after each)


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    return write_tiny_backbone(tmp_path_factory.mktemp("slurm-ft") / "backbone.safetensors")


def ft_job_args(init: Path, run_dir: Path | None) -> list[str]:
    """A 2-task born-again job (2 generations of STEPS steps); ``run_dir`` None leaves the recipe's default."""
    over = ft_overrides(run_dir or Path("unused"), init, "born-again", **{"optim.epochs": 2, "train.log_every": 1})
    if run_dir is None:
        over = [o for o in over if not o.startswith("train.output_dir=")]
    return ["finetune", *TWO_CPU_TASKS, *over]


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, init, tmp_path_factory) -> dict:
    """One born-again job run to its end from a working directory of its own, the run directory left to
    the recipe's default; its run directory and both tasks' results."""
    cwd = tmp_path_factory.mktemp("submitted-from")
    here = Path.cwd()
    os.chdir(cwd)  # the default run directory is relative to where the launcher runs, as for the CLI
    try:
        job = submit(ft_job_args(init, None))
    finally:
        os.chdir(here)
    run = cwd / "runs" / RUN_NAME
    return {"job": job, "run": run, "results": finish(job, run)}


@pytest.mark.cluster
def test_finetune_job_runs_to_its_results(uninterrupted):
    job, run, results = uninterrupted["job"], uninterrupted["run"], uninterrupted["results"]
    ours, theirs = results
    assert theirs is None  # rank 1 returns nothing; rank 0 the results
    assert ours["method"] == "born-again" and ours["models_trained"] == 2 and ours["total_steps"] == 2 * STEPS
    assert json.loads((run / "results.json").read_text())["rows"] == ours["rows"]
    assert (run / "results.md").is_file()
    for gen in ("gen0", "gen1"):
        assert sorted(steps(run / gen)) == list(range(1, STEPS + 1))
        state = torch.load(run / gen / f"checkpoint-{STEPS:08d}.pt", map_location="cpu", weights_only=True)
        assert state["world"] == 2 and state["step"] == STEPS
    saved = (run / "config.yaml").read_text()
    assert f"output_dir: {run}\n" in saved and "method: born-again" in saved  # resolved, absolute
    record = json.loads((run / "slurm_jobs.jsonl").read_text())
    assert record["job_id"] == job.job_id and record["kind"] == "finetune" and record["argv"][0] == "finetune"
    assert f"--job-name={RUN_NAME}" in (run / "slurm" / f"{job.job_id}_submission.sh").read_text()
    assert "global_rank=1(2)" in (run / "slurm" / f"{job.job_id}_1_log.out").read_text()


@pytest.mark.cluster
def test_preempted_finetune_job_resumes_to_the_same_results(uninterrupted, init, tmp_path):
    run = tmp_path / "run"
    job = submit(ft_job_args(init, run))
    wait_for(lambda: len(steps(run / "gen1")) >= 3, "3 training steps of generation 1", 240)
    job._interrupt()  # what SLURM does to a preempted job: TERM, then USR2
    ours, _ = finish(job, run)
    log = rank0_log(run)
    saved = re.search(r"preempted: checkpoint at step (\d+) written \((\S+)\)", log)
    resumed = re.search(r"resumed from (\S+) at step (\d+)", log)
    assert saved and resumed, log[-3000:]
    assert resumed.group(1) == saved.group(2) and Path(resumed.group(1)).parent == run / "gen1"
    assert int(resumed.group(2)) == int(saved.group(1)) >= 3  # generation 1 went on from there, not from 0
    assert sorted(steps(run / "gen1")) == list(range(1, STEPS + 1))  # every step exactly once
    assert sorted(steps(run / "gen0")) == list(range(1, STEPS + 1))  # generation 0 was finished, not redone
    assert ours["rows"] == uninterrupted["results"][0]["rows"]  # the same figures as the uninterrupted job


@pytest.mark.parametrize("extra, message", [
    (["method=nope"], "method must be one of"),
    (["init=MISSING"], "init MISSING not found: pass init=RUN_DIR, CHECKPOINT, EXPORT or timm:NAME"),
    (["--tasks-per-node", "3", "init=timm:vit_tiny_patch16_224", "optim.batch_size=64"],
     "not divisible by the 3 processes"),
    (["--nodes", "1", "finetune"], "the kind of run goes first: python -m launch.slurm finetune"),
])
def test_finetune_launcher_refuses_before_queueing(tmp_path, extra, message, capsys):
    run = tmp_path / "run"
    argv = [a.replace("MISSING", str(tmp_path / "missing")) for a in extra]
    kind = [] if "finetune" in argv else ["finetune"]
    assert main([*kind, *argv, f"train.output_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("MISSING", str(tmp_path / "missing")) in err and len(err.splitlines()) == 1, err
    assert not run.exists()


# ---- the preemption logic, without SLURM: a fake submitit handler and fake tasks ------------------------

class FakeEngine(SimpleNamespace):
    def save(self, task, sync: bool = True) -> None:
        self.saved.append((task.step, sync))
        self.last_good = f"checkpoint-{task.step:08d}.pt"


def fake_task(step: int, total: int, looping: bool = True) -> SimpleNamespace:
    """A task at ``step`` of ``total``; ``looping``: the engine's loop has begun (it sets ``finite`` then)."""
    finite = torch.ones((), dtype=torch.bool) if looping else None
    engine = FakeEngine(after_step=None, finite=finite, saved=[], last_good=None)
    return SimpleNamespace(step=step, total_steps=total, engine=engine)


@pytest.fixture
def submitit_handler():
    """A stand-in for submitit's SIGUSR2 handler, recording its calls; the previous handler is put back."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_each_generation_is_hooked_and_a_signal_waits_for_the_step_boundary(submitit_handler):
    job = Job("finetune", {})
    gen0, gen1 = fake_task(16, 16), fake_task(3, 16)
    job._attach(gen0)
    job._attach(gen1)  # a second generation: the same handler, not a handler chained onto itself
    assert gen0.engine.after_step == gen1.engine.after_step == job._after_step
    os.kill(os.getpid(), signal.SIGUSR2)  # mid-step of generation 1: only noted
    assert submitit_handler == []
    gen1.step += 1
    gen1.engine.after_step()  # the step is over: now submitit acts
    assert submitit_handler == [signal.SIGUSR2]
    gen1.engine.after_step()
    assert submitit_handler == [signal.SIGUSR2]  # once
    delayed = job.checkpoint()
    assert gen1.engine.saved == [(4, False)]  # rank 0 saves the finished step, without a barrier
    assert delayed.function.kind == "finetune" and delayed.function._task is None


def test_a_signal_during_the_last_step_waits_for_the_engine_to_save_it(submitit_handler):
    job = Job("pretrain", {})
    task = fake_task(15, 16)
    job._attach(task)
    task.step = 16  # the last step ran; the engine logs, evaluates and checkpoints it before its call-back
    os.kill(os.getpid(), signal.SIGUSR2)
    assert submitit_handler == []
    task.engine.after_step()
    assert submitit_handler == [signal.SIGUSR2]
    job.checkpoint()
    assert task.engine.saved == []  # the engine saved the last step itself
    os.kill(os.getpid(), signal.SIGUSR2)  # after the last call-back (a final evaluation): at once
    assert submitit_handler == [signal.SIGUSR2] * 2


@pytest.mark.parametrize("task", [fake_task(16, 16), fake_task(0, 16, looping=False)], ids=["done", "not-begun"])
def test_a_signal_with_no_step_under_way_goes_to_submitit_at_once(submitit_handler, task):
    """A task resumed at its end, or one whose loop has not begun (data, baselines, a time-budget plan)."""
    job = Job("pretrain", {})
    job._attach(task)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert submitit_handler == [signal.SIGUSR2]
    job.checkpoint()
    assert task.engine.saved == []  # nothing new to save


def test_a_job_pickles_its_kind_and_config_only_and_reads_a_former_pretrain_job():
    job = Job("finetune", {"method": "born-again"})
    job._task = fake_task(3, 16)
    back = pickle.loads(pickle.dumps(job))
    assert (back.kind, back.config, back._task) == ("finetune", {"method": "born-again"}, None)
    former = Job.__new__(Job)
    former.__setstate__({"config": {"recipe": "quickstart"}})  # what a queued PretrainJob's pickle holds
    assert former.kind == "pretrain" and set(JOB_KINDS) >= {"pretrain", "finetune"}
