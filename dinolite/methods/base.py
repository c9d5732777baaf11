"""What every training method shares: the schedule of a step, the multi-crop views of a step, the trial.

A method (``dino.DINOMethod``, ``distill.DistillMethod``) owns its models, losses and optimizer and one
``train_step(crops, schedule) -> (loss, {name: term})``; the pretraining task (``train.Pretrainer``) and the
library API wrap any of them the same way.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config
from ..distributed import DistInfo
from ..eval.evaluated import Evaluated
from ..maths import precision
from ..maths.augment import Crops, MultiCrop
from ..maths.models import is_vit
from ..maths.schedules import Plan, cosine, learning_rate, scaled_lr, teacher_temperature
from .step import TrainStep


@dataclass(frozen=True)
class Schedule:
    """Every scheduled value at one step (the step's index seeds its augmentation, masks and drop path)."""

    step: int
    lr: float
    wd: float
    momentum: float  # the EMA teacher's momentum after this step (DINO)
    teacher_temp: float
    freeze_last_layer: bool = False  # the head's last layer gets no update at this step
    backbone_frozen: bool = False  # model.init from a backbone alone: the heads learn, the backbone waits
    unfreeze: bool = False  # the first step after that warm-up (teacher copied, center restarted)

    @classmethod
    def at(cls, cfg: Config, step: int, plan: Plan, global_batch: int) -> Schedule:
        """The recipe's schedules at ``step`` of ``plan``; the peak LR follows the linear scaling rule
        (``optim.lr`` is for a global batch of 256)."""
        o, total = cfg.optim, plan.total
        warm = int(round((cfg.model.init_head_warmup or 0.0) * total))
        return cls(
            step=step,
            lr=learning_rate(o, step, total, scaled_lr(o.lr, global_batch), plan.warmup),
            wd=cosine(step, total, o.weight_decay, o.weight_decay_end),
            momentum=cosine(step, total, o.momentum_teacher, o.momentum_teacher_end),
            teacher_temp=teacher_temperature(step, plan.teacher_temp_warmup, cfg.loss.warmup_teacher_temp,
                                             cfg.loss.teacher_temp),
            freeze_last_layer=step < plan.freeze_last_layer,
            backbone_frozen=step < warm,
            unfreeze=warm > 0 and step == warm,
        )


class Method(TrainStep):
    """The parts every pretraining method has: the run's config, device and ranks, its multi-crop augmentation,
    and the step's skeleton (``step.TrainStep``: seeds, DDP, the optimizer's step)."""

    def __init__(self, cfg: Config, device: torch.device | str, dist: DistInfo | None):
        super().__init__(device, dist, cfg.train.seed, cfg.optim.batch_size)
        self.cfg = cfg
        self.augment = MultiCrop(cfg.augment).to(self.device)
        # "bf16" or "fp32"; train.precision=fastest on a CPU is decided by timing steps (budgeted.BudgetedTask)
        self.convolutional = any(not is_vit(arch) for arch in (cfg.model.arch, *(m.arch for m in cfg.distill.students)))
        self.precision = precision.resolve(cfg.train.precision, self.device, self.convolutional) or "fp32"

    def autocast(self) -> AbstractContextManager:
        """The forward passes' autocast context (bf16 where ``self.precision`` says so)."""
        return precision.autocast(self.device, self.precision)

    def schedule(self, step: int, plan: Plan) -> Schedule:
        return Schedule.at(self.cfg, step, plan, self.global_batch)

    def make_crops(self, images: Tensor, hw: Tensor | None, step: int) -> Crops:
        """This step's multi-crop views of this rank's images. Parameters are drawn for the global batch
        and sliced, so the crops do not depend on the number of processes."""
        return self.augment(images.to(self.device, non_blocking=True), hw, self.batch_rng(step))

    def log_figures(self) -> dict[str, Tensor]:
        """Figures of the last step for the log line (device tensors)."""
        return {}

    def evaluated(self) -> list[Evaluated]:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, state: dict) -> None:
        raise NotImplementedError

    def seconds_per_step(self, loader, plan: Plan, step: int, warmup: int = 2, timed: int = 8) -> float:
        """Seconds per training step here, from ``warmup + timed`` real steps on ``loader``'s batches at a
        representative LR (the last layer not frozen); the state is put back afterwards (:meth:`trial`), so the
        run starts from exactly the state it would have had without the timing."""
        batches = (batch for epoch in range(warmup + timed) for batch in loader.epoch(epoch))
        sched = self.schedule(max(plan.warmup, 1), plan)

        def run() -> float:
            losses = []
            for i in range(warmup + timed):
                if i == warmup:
                    torch.cuda.synchronize() if self.device.type == "cuda" else None
                    t0 = time.time()
                images, hw, _labels = next(batches)
                losses.append(self.train_step(self.make_crops(images, hw, step), sched)[0])
            losses[-1].item()  # waits for the device
            seconds = time.time() - t0
            # A non-finite loss, or weights a non-finite gradient has reached, say this arithmetic cannot train
            # here (see precision.resolve): infinitely slow, so a timing that compares precisions never keeps it.
            params = [p.detach() for group in self.optimizer.param_groups for p in group["params"]]
            finite = bool(torch.stack(losses).isfinite().all()) and bool(torch.stack(torch._foreach_norm(params))
                                                                        .isfinite().all())
            return seconds if finite else math.inf

        return self.trial(run) / timed

    def trial(self, run: Callable[[], float]) -> float:
        """``run()`` (e.g. timing a few steps), then every weight, optimizer moment and center put back, so
        the run continues from exactly the state it would have had without the trial."""
        saved = copy.deepcopy(self.state())
        try:
            return run()
        finally:
            self.load_state(saved)
