"""The step loop of every run: steps, the collective decisions at log steps, checkpoints, metrics.

A task (pretraining, fine-tuning one model) supplies its parts through :class:`Task`; this loop
decides what happens when, in one place:

- every ``log_every`` steps, at the end of each epoch and at the last step, the ranks agree, in one
  all-reduce, on the logged figures and on two flags: *a loss was NaN or infinite on some rank*
  (stop with the last good checkpoint named, write nothing) and *the periodic checkpoint is due on
  some rank's clock* (every rank saves). No rank decides alone, so none waits in a collective the
  others never enter;
- a checkpoint is written at the end of each epoch, at the last step and when due, never after a NaN;
- ``after_step`` (the SLURM job's preemption hook) runs after every finished step, when the state is
  one a resume can continue from;
- a time budget is a planned number of steps, agreed (the smallest) before the first step, and
  shortened at a log step (``Task.replan``, from the agreed record) when the run falls behind it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from ..distributed import DistInfo, all_reduce_mean, barrier
from ..errors import TrainingDiverged
from ..loggers import MetricsWriter
from . import checkpoint as ckpt
from .runtime import to_device_ahead


@dataclass
class StepOut:
    """One step's loss and other figures, device tensors (no host sync); averaged over the steps of a
    log interval, then over the ranks."""

    loss: Tensor
    sums: dict[str, Tensor] = field(default_factory=dict)


class Task(Protocol):
    """What the loop needs from pretraining or fine-tuning."""

    step: int

    @property
    def steps_per_epoch(self) -> int: ...

    def batches(self, epoch: int, start: int) -> Iterable[tuple]:
        """The batches of ``epoch`` from its step ``start`` (a resume mid-epoch)."""

    def run_step(self, batch: tuple) -> StepOut:
        """Augment the batch, then one optimisation step on it (``self.step`` is the step's index)."""

    def log_figures(self) -> dict[str, Tensor]:
        """Figures of the log step itself (e.g. the teacher's entropy), averaged over the ranks."""

    def at_log(self, record: dict) -> dict[str, str]:
        """Complete the agreed record (schedule values, evaluation, warnings) and return the progress
        bar's extra fields; may raise a UserError."""

    def replan(self, record: dict, stop: int) -> int:
        """The stop after this log step: ``stop``, or an earlier one (a time budget fell behind). Decided from
        the agreed record only, so every rank decides alike; what changed is added to ``record``."""

    def after_epoch(self) -> None:
        """Called at each epoch's end, before its checkpoint (fine-tuning evaluates here)."""

    def short_epoch(self, epoch: int) -> None:
        """The loader ended ``epoch`` early (streamed shards hold fewer samples than their manifest)."""

    def state(self) -> dict: ...

    def load_state(self, state: dict, path: Path) -> None: ...

    @property
    def nan_advice(self) -> str:
        """What to change before running again, ending the one-line message of a NaN stop."""
        ...


@dataclass
class Engine:
    """Runs one task in ``run_dir`` on the ranks of ``dist``; only rank 0 writes files."""

    run_dir: Path
    dist: DistInfo
    device: torch.device
    metrics: MetricsWriter
    keep_checkpoints: int = 2
    checkpoint_every_minutes: float = 10.0
    log_every: int = 20
    progress: bool = True
    desc: str = "train"
    batch_images: int = 0  # the global batch, for images/s
    last_good: Path | None = None
    after_step: Callable[[], None] | None = None
    finite: Tensor | None = None  # this rank's losses so far were all finite (read by the preemption hook)

    # ---- checkpoints -------------------------------------------------------------------------
    def resume(self, task: Task) -> Path | None:
        """Load the newest readable checkpoint into ``task``; refuse a directory whose checkpoints all fail."""
        path, state = ckpt.latest_valid(self.run_dir, move_aside=self.dist.is_main)
        if path is None or state is None:
            ckpt.refuse_unreadable(self.run_dir)
            self.metrics.drop_after(-1)  # the records of an attempt killed before its first checkpoint: redone
            return None
        task.load_state(state, path)
        task.step = int(state["step"])
        self.last_good = path
        self.metrics.drop_after(task.step)  # records an interrupted run wrote after this checkpoint
        return path

    def save(self, task: Task, sync: bool = True) -> None:
        """Rank 0 writes; ``sync=False`` (the preemption hook) skips the barrier the other ranks never reach."""
        if self.dist.is_main:
            ckpt.save_checkpoint(task.state(), self.run_dir, task.step, self.keep_checkpoints)
        if sync:
            barrier()
        self.last_good = ckpt.checkpoint_path(self.run_dir, task.step)  # every rank names it in a NaN stop

    # ---- decisions ---------------------------------------------------------------------------
    def agree(self, figures: dict[str, Tensor], diverged: Tensor, due: bool) -> tuple[dict[str, float], bool, bool]:
        """One all-reduce: the figures' mean over ranks, a NaN on any rank, a checkpoint due on any rank."""
        flags = torch.stack([diverged.float(), torch.tensor(float(due), device=self.device)])
        scalars = [v.float().reshape(()) for v in figures.values()]
        values = torch.cat([torch.stack(scalars), flags]) if scalars else flags
        out = all_reduce_mean(values).tolist()
        return dict(zip(figures, out[:-2], strict=True)), out[-2] > 0, out[-1] > 0

    def diverged(self, task: Task) -> str:
        """The one-line message of a NaN stop: where, the checkpoint to fall back on, what to change."""
        where = f"; the last good checkpoint is {self.last_good}" if self.last_good else ""
        return f"the loss became NaN or infinite by step {task.step} of {self.run_dir}{where}; {task.nan_advice}"

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, task: Task, stop: int) -> None:
        """Steps from ``task.step`` to ``stop`` (exclusive of what is done), with logs and checkpoints."""
        spe = task.steps_per_epoch
        bar = tqdm(total=stop, initial=task.step, desc=self.desc, disable=not self.progress, dynamic_ncols=True)
        self.finite = finite = torch.ones((), dtype=torch.bool, device=self.device)
        sums: dict[str, Tensor] = {}
        last_log, last_log_step, last_ckpt = time.time(), task.step, time.time()
        while task.step < stop:
            epoch, in_epoch = divmod(task.step, spe)
            for batch in to_device_ahead(task.batches(epoch, in_epoch), self.device):
                out = task.run_step(batch)
                finite &= torch.isfinite(out.loss)
                for k, v in {"loss": out.loss, **out.sums}.items():
                    sums[k] = sums[k] + v if k in sums else v
                task.step += 1
                bar.update(1)
                end_of_epoch = task.step % spe == 0
                if task.step % self.log_every == 0 or end_of_epoch or task.step == stop:
                    # The one host synchronisation per log interval, and the one point where the ranks decide.
                    now, n = time.time(), task.step - last_log_step
                    due = (now - last_ckpt) / 60 >= self.checkpoint_every_minutes
                    figures = {**{k: v / n for k, v in sums.items()}, **task.log_figures(),
                               # training time alone (evaluations and checkpoints excluded), for the budget's check
                               "step_seconds": torch.tensor((now - last_log) / n, device=self.device)}
                    means, diverged, due = self.agree(figures, ~finite, due)
                    if diverged:
                        raise TrainingDiverged(self.diverged(task))
                    record = {"step": task.step, "epoch": task.step / spe, **means}
                    record["images_per_s"] = n * self.batch_images / max(now - last_log, 1e-9)
                    postfix = task.at_log(record)
                    replanned = task.replan(record, stop)
                    if replanned != stop:
                        stop = bar.total = replanned
                        bar.refresh()
                    self.metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", **postfix)
                    sums, last_log_step = {}, task.step
                    if end_of_epoch:
                        task.after_epoch()
                    if end_of_epoch or task.step == stop or due:
                        self.save(task)
                        last_ckpt = time.time()
                    last_log = time.time()  # evaluations and checkpoints do not count in images/s
                if self.after_step is not None:
                    self.after_step()
                if task.step >= stop:
                    break
            if task.step < min((epoch + 1) * spe, stop):
                task.short_epoch(epoch)
        bar.close()


def start_engine(run_dir: Path, dist: DistInfo, device: torch.device, cfg, progress: bool, desc: str,
                 batch_images: int) -> Engine:
    """The engine of a task's run directory with its metrics writer (``engine.metrics``: metrics.jsonl and the
    loggers of ``cfg.train``), as every task sets them up."""
    from ..config import as_dict
    from ..loggers import MetricsWriter

    t = cfg.train
    metrics = MetricsWriter(Path(run_dir) / "metrics.jsonl", dist.is_main, t.loggers, as_dict(cfg), t.wandb_project,
                            t.wandb_mode)
    return Engine(Path(run_dir), dist, device, metrics, t.keep_checkpoints, t.checkpoint_every_minutes, t.log_every,
                  progress, desc, batch_images=batch_images)


def resume_task(engine: Engine, task: Task, schedule_changes: dict, note: Callable[[], str] = str) -> Path | None:
    """Resume ``task`` from its newest readable checkpoint (None: a fresh run): the schedule changes a resume
    accepted (train.resume_schedule_change=true) are recorded, and rank 0 says where it resumed (``note()``: what
    the task adds to that line)."""
    path = engine.resume(task)
    if path is None:
        return None
    if schedule_changes:
        engine.metrics.write({"step": task.step, "schedule_change": schedule_changes})
    if engine.dist.is_main:
        print(f"resumed from {path} at step {task.step}{note()}", flush=True)
    return path
