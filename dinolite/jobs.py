"""What a submitit task runs: a long run (pretraining, fine-tuning) that checkpoints and requeues on preemption.

submitit pickles a :class:`Job`, starts one copy per task (SLURM or its local executor), and on
preemption or time-out calls ``checkpoint()`` on global rank 0, requeues the job and exits.
:data:`JOB_KINDS` names the runs a job can be: each kind's config schema and recipe loader, its
run-directory check and its entry point. Another kind of run (distillation, say) is one more entry,
provided its entry point calls ``setup`` with every task it trains before that task's first step.
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import OmegaConf

if TYPE_CHECKING:  # torch and timm are imported by a job's first use of its kind, not by this module
    from .engine.loop import Engine
    from .engine.loop import Task as EngineTask
    from .engine.rundir import RunDir

    class Task(EngineTask, Protocol):
        """What the preemption logic needs of a running task, whichever kind: the job reads ``step``,
        ``total_steps`` and ``engine`` only (a task of the run engine, so that the engine can save it)."""

        step: int
        engine: Engine

        @property
        def total_steps(self) -> int: ...


def _attr(target: str) -> Any:
    """The object named ``module:attr``, imported on first use."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class JobKind:
    """One kind of long run the SLURM launcher submits, its parts named ``module:attr`` (imported on use,
    so that naming the kinds costs no torch import).

    ``schema`` is the config dataclass; ``loader(recipe, overrides)`` the validated config (the loader of
    the kind's ``dinolite`` command, so defaults such as fine-tuning's run directory resolve the same
    way); ``run_dir(cfg, is_main)`` creates the run directory, refuses one that holds an incompatible run
    and saves the config; ``entry(cfg, progress=False, setup=hook)`` runs (or resumes) the run on the
    job's ranks and must call ``setup`` with every task it builds before that task's first step.
    ``paths`` are the keys holding local paths, made absolute before submitting (the nodes may start
    elsewhere); ``weights`` are the keys among them naming input weights, which must exist before a
    job is queued (empty and ``timm:NAME`` values excepted). ``name_keys`` make the default job name.
    """

    schema: str
    loader: str
    run_dir: str
    entry: str
    name_keys: tuple[str, ...] = ("recipe",)
    paths: tuple[str, ...] = ("train.output_dir", "data.root", "data.eval_shards")
    weights: tuple[str, ...] = ()

    def load(self, recipe: str | None, overrides: list[str]) -> Any:
        return _attr(self.loader)(recipe, overrides)

    def structured(self, config: dict[str, Any]) -> Any:
        """The config dataclass of a resolved config held as plain containers."""
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(_attr(self.schema)), config))

    def prepare_run_dir(self, cfg: Any, is_main: bool) -> RunDir:
        return _attr(self.run_dir)(cfg, is_main)

    def run(self, cfg: Any, setup: Callable[[Task], None]) -> Any:
        return _attr(self.entry)(cfg, progress=False, setup=setup)

    def job_name(self, cfg: Any) -> str:
        return "-".join(str(get_key(cfg, key)) for key in self.name_keys)


JOB_KINDS: dict[str, JobKind] = {
    "pretrain": JobKind("dinolite.config:Config", "dinolite.config:load_config",
                        "dinolite.pretraining.rundir:prepare_run_dir", "dinolite.pretraining.train:pretrain"),
    "finetune": JobKind("dinolite.finetune.config:FinetuneConfig", "dinolite.finetune.recipe:load_finetune_config",
                        "dinolite.finetune.methods:prepare_finetune_dir", "dinolite.finetune.methods:finetune",
                        name_keys=("recipe", "method"),
                        paths=("train.output_dir", "data.root", "data.eval_shards", "init", "born_again.teacher"),
                        weights=("init", "born_again.teacher")),
    "distill": JobKind("dinolite.config:Config", "dinolite.config:load_distill_config",
                       "dinolite.pretraining.rundir:prepare_run_dir", "dinolite.pretraining.train:pretrain",
                       paths=("train.output_dir", "data.root", "data.eval_shards", "distill.teacher"),
                       weights=("distill.teacher",)),
}
DEFAULT_KIND = "pretrain"  # what `python -m launch.slurm` submits when its first word names no kind


def is_local_path(value: str) -> bool:
    """A config value naming a file or folder (not empty, not a ``timm:NAME`` model)."""
    return bool(value) and not value.startswith("timm:")


def get_key(cfg: Any, key: str) -> Any:
    """``cfg.a.b`` for ``key`` "a.b"."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def absolute_paths(kind: JobKind, cfg: Any) -> None:
    """Make every path key of ``cfg`` absolute (relative to this directory), in place."""
    for key in kind.paths:
        value = get_key(cfg, key)
        if is_local_path(value):
            parent, _, name = key.rpartition(".")
            setattr(get_key(cfg, parent) if parent else cfg, name, str(Path(value).resolve()))


class Job:
    """A run of ``kind`` under torch.distributed, with a checkpoint taken at a step boundary on preemption.

    submitit's signal handler runs between two Python bytecodes, usually in the middle of a step
    (after the optimizer update but before the EMA, say), where the state is not one a resume
    could continue from. So the job replaces that handler with one that only notes the signal;
    the engine calls back after each step (after its own logging, evaluation and checkpoint of that
    step), and only then is submitit's handler run: it calls :meth:`checkpoint` (rank 0 saves the
    step just finished), requeues and exits. A signal that comes while no step is to be finished
    (before a task's loop begins, between two born-again generations, after the last step's
    call-back) is handed to submitit at once. Periodic checkpoints stay the fallback for a job
    killed without a signal.
    """

    def __init__(self, kind: str, config: dict[str, Any]):
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}: one of {', '.join(JOB_KINDS)}")
        self.kind = kind
        self.config = config  # the resolved config as plain containers (picklable, YAML-able)
        self._task: Task | None = None  # the task training now (set by the entry point's setup hook)
        self._stepping = False  # the engine will call _after_step again (a step of the task is yet to finish)
        self._pending: int | None = None
        self._submitit_handler: Callable[[int, FrameType | None], Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config}  # never pickle a live task into the requeued job

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A pickle of the former PretrainJob (a job queued before the upgrade) holds only its config.
        Job.__init__(self, state.get("kind", "pretrain"), state["config"])

    def __call__(self) -> Any:
        """Run the job on this task: the entry point's return value (a pretraining run's k-NN figures,
        a fine-tuning run's results on rank 0)."""
        import submitit

        from .distributed import master_port

        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job; every GPU stays visible
        # (the trainer picks cuda:LOCAL_RANK), which NCCL needs for peer-to-peer transfers.
        job_id = submitit.JobEnvironment().job_id
        os.environ["MASTER_PORT"] = str(master_port(job_id))  # not the one submitit draws from 20000-60000
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        kind = JOB_KINDS[self.kind]
        return kind.run(kind.structured(self.config), setup=self._attach)

    # ---- preemption ------------------------------------------------------------------------
    def _attach(self, task: Task) -> None:
        """The entry point's setup hook: called with every task (each born-again generation) before its first step."""
        self._task = task
        self._stepping = task.step < task.total_steps  # a task resumed at its end runs no step
        if self._submitit_handler is None:
            handler = signal.getsignal(signal.SIGUSR2)
            if not callable(handler):  # no submitit handler: the job was called outside submitit
                return
            self._submitit_handler = handler
            signal.signal(signal.SIGUSR2, self._note_signal)
        task.engine.after_step = self._after_step

    def _submitit(self, signum: int, frame: FrameType | None) -> None:
        assert self._submitit_handler is not None  # _attach set it before installing _note_signal
        self._submitit_handler(signum, frame)

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        """Defer the signal to the end of the step under way; act now when the engine runs no step (its loop has
        not begun: data, baselines, a time-budget plan; or its last step is over), so no warning is ever lost."""
        task = self._task
        if self._stepping and task is not None and task.engine.finite is not None:  # finite: set as the loop starts
            self._pending = signum
        else:
            self._submitit(signum, frame)  # no step to finish: let submitit act now

    def _after_step(self) -> None:
        """The engine's call-back after each finished step (and that step's log, evaluation, checkpoint)."""
        task = self._task
        if task is not None and task.step >= task.total_steps:
            self._stepping = False  # the last step: what follows (final evaluation, next generation) is no step
        if self._pending is not None:
            signum, self._pending = self._pending, None
            self._submitit(signum, None)  # rank 0: checkpoint(), requeue, exit; others: a log line

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on global rank 0: save the finished step, resubmit a fresh job."""
        import submitit

        task = self._task
        finite = task.engine.finite if task is not None else None
        if task is not None and task.step < task.total_steps and finite is not None and bool(finite):
            task.engine.save(task, sync=False)  # the other ranks are not at a barrier; the requeue kills them
            print(f"preempted: checkpoint at step {task.step} written ({task.engine.last_good}), requeueing",
                  flush=True)
        return submitit.helpers.DelayedSubmission(Job(self.kind, self.config))


# Jobs queued before Job replaced PretrainJob unpickle by this name (see Job.__setstate__).
PretrainJob = Job
