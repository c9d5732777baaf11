"""What a submitit task runs: a pretraining run that checkpoints and requeues on preemption.

submitit pickles a :class:`PretrainJob`, starts one copy per task (SLURM or its local executor),
and on preemption or time-out calls ``checkpoint()`` on global rank 0, requeues the job and exits.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from omegaconf import OmegaConf

from .distributed import master_port


class PretrainJob:
    """``pretrain(cfg)`` under torch.distributed, with a checkpoint taken at a step boundary on preemption.

    submitit's signal handler runs between two Python bytecodes, usually in the middle of a step
    (after the optimizer update but before the EMA, say), where the state is not one a resume
    could continue from. So the job replaces that handler with one that only notes the signal;
    the trainer calls back after each step, and only then is submitit's handler run: it calls
    :meth:`checkpoint` (rank 0 saves the step just finished), requeues and exits. Periodic
    checkpoints stay the fallback for a job killed without a signal.
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config  # the resolved config as plain containers (picklable, YAML-able)
        self._trainer: Any = None  # the running PretrainTrainer (set by pretrain's setup hook)
        self._pending: int | None = None
        self._submitit_handler: Callable[[int, FrameType | None], Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}  # never pickle a live trainer into the requeued job

    def __setstate__(self, state: dict[str, Any]) -> None:
        PretrainJob.__init__(self, state["config"])

    def __call__(self) -> dict[str, float]:
        import submitit

        from .config import Config
        from .train import pretrain

        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job; every GPU stays visible
        # (the trainer picks cuda:LOCAL_RANK), which NCCL needs for peer-to-peer transfers.
        job_id = submitit.JobEnvironment().job_id
        os.environ["MASTER_PORT"] = str(master_port(job_id))  # not the one submitit draws from 20000-60000
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        cfg = cast(Config, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), self.config)))
        return pretrain(cfg, progress=False, setup=self._attach)

    # ---- preemption ------------------------------------------------------------------------
    def _attach(self, trainer) -> None:
        self._trainer = trainer
        handler = signal.getsignal(signal.SIGUSR2)
        if callable(handler):  # submitit's handler; absent when the job is called outside submitit
            self._submitit_handler = handler
            signal.signal(signal.SIGUSR2, self._note_signal)
            trainer.after_step = self._after_step

    def _submitit(self, signum: int, frame: FrameType | None) -> None:
        assert self._submitit_handler is not None  # _attach set it before installing _note_signal
        self._submitit_handler(signum, frame)

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        trainer = self._trainer
        if trainer is None or trainer.step >= trainer.total_steps:
            self._submitit(signum, frame)  # no step to finish: let submitit act now
        else:
            self._pending = signum

    def _after_step(self) -> None:
        if self._pending is not None:
            signum, self._pending = self._pending, None
            self._submitit(signum, None)  # rank 0: checkpoint(), requeue, exit; others: a log line

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on global rank 0: save the finished step, resubmit a fresh job."""
        import submitit

        trainer = self._trainer
        if trainer is not None and trainer.step < trainer.total_steps and bool(trainer.finite):
            trainer.save(sync=False)  # the other ranks are not at a barrier; they are killed by the requeue
            print(f"preempted: checkpoint at step {trainer.step} written, requeueing", flush=True)
        return submitit.helpers.DelayedSubmission(PretrainJob(self.config))
