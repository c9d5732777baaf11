"""What every training method shares: the schedule of a step, the multi-crop views of a step, the trial.

A method (``dino.DINOMethod``, ``distill.DistillMethod``) owns its models, losses and optimizer and one
``train_step(crops, schedule) -> (loss, {name: term})``; the pretraining task (``train.Pretrainer``) and the
library API wrap any of them the same way.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .augment import Crops, GlobalBatchRNG, MultiCrop
from .config import Config
from .distributed import DistInfo
from .engine import streams
from .engine.runtime import per_rank_batch
from .eval.evaluated import Evaluated
from .optim import set_schedule
from .schedules import Plan, cosine, scaled_lr, teacher_temperature

if TYPE_CHECKING:
    pass


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
            lr=cosine(step, total, scaled_lr(o.lr, global_batch), o.min_lr, plan.warmup),
            wd=cosine(step, total, o.weight_decay, o.weight_decay_end),
            momentum=cosine(step, total, o.momentum_teacher, 1.0),
            teacher_temp=teacher_temperature(step, plan.teacher_temp_warmup, cfg.loss.warmup_teacher_temp,
                                             cfg.loss.teacher_temp),
            freeze_last_layer=step < plan.freeze_last_layer,
            backbone_frozen=step < warm,
            unfreeze=warm > 0 and step == warm,
        )


class Method:
    """The parts every method has: the run's config, device and ranks, and its multi-crop augmentation."""

    def __init__(self, cfg: Config, device: torch.device | str, dist: DistInfo | None):
        self.cfg, self.device = cfg, torch.device(device)
        self.dist = dist or DistInfo()
        self.global_batch = cfg.optim.batch_size
        self.batch = per_rank_batch(self.global_batch, self.dist.world)
        self.augment = MultiCrop(cfg.augment).to(self.device)
        self.generator = torch.Generator(self.device)  # reseeded every step (engine/streams.py)

    def schedule(self, step: int, plan: Plan) -> Schedule:
        return Schedule.at(self.cfg, step, plan, self.global_batch)

    def make_crops(self, images: Tensor, hw: Tensor | None, step: int) -> Crops:
        """This step's multi-crop views of this rank's images. Parameters are drawn for the global batch
        and sliced, so the crops do not depend on the number of processes."""
        self.generator.manual_seed(streams.step_seed(self.cfg.train.seed, step, streams.AUGMENT))
        rng = GlobalBatchRNG(self.generator, self.dist.rank * self.batch, self.batch, self.global_batch)
        return self.augment(images.to(self.device, non_blocking=True), hw, rng)

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        """``module`` as the step calls it: DDP-wrapped with several processes."""
        if self.dist.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)

    def seed_drop_path(self, step: int) -> None:
        """Drop path draws from torch's global stream, per rank (engine/streams.py)."""
        torch.manual_seed(streams.step_seed(self.cfg.train.seed, step, streams.drop_path(self.dist.rank)))

    # ---- the step: one shape for every method -------------------------------------------------
    optimizer: torch.optim.Optimizer  # set by the method, over what it trains

    def train_step(self, crops: Crops, sched: Schedule) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimisation step on this step's crops: the step every front end runs."""
        set_schedule(self.optimizer, sched.lr, sched.wd)
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.forward_backward(crops, sched)
        self.optimizer_step(sched)
        self.after_update(sched)
        return loss, terms

    # ---- what each method provides -----------------------------------------------------------
    def forward_backward(self, crops: Crops, sched: Schedule) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's loss, backpropagated; returns it and each term by name (detached device tensors)."""
        raise NotImplementedError

    def optimizer_step(self, sched: Schedule) -> None:
        """Clip, drop frozen gradients, then the optimizer's update."""
        raise NotImplementedError

    def after_update(self, sched: Schedule) -> None:
        """What follows the optimizer's update (DINO: the teacher's EMA); nothing by default."""

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
            for i in range(warmup + timed):
                if i == warmup:
                    torch.cuda.synchronize() if self.device.type == "cuda" else None
                    t0 = time.time()
                images, hw, _labels = next(batches)
                loss, _ = self.train_step(self.make_crops(images, hw, step), sched)
            loss.item()  # waits for the device
            return time.time() - t0

        return self.trial(run) / timed

    def trial(self, run: Callable[[], float]) -> float:
        """``run()`` (e.g. timing a few steps), then every weight, optimizer moment and center put back, so
        the run continues from exactly the state it would have had without the trial."""
        saved = copy.deepcopy(self.state())
        try:
            return run()
        finally:
            self.load_state(saved)
