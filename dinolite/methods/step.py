"""The one optimisation step every task runs, written once: per-step seeds (engine/streams.py), augmentation
drawn for the global batch and sliced to this rank, DDP, and the optimizer's step around what a method gives
(``forward_backward``, ``optimizer_step``, ``after_update``). Pretraining's and distillation's methods
(``method.Method``) and fine-tuning's (``finetune.trainer.FinetuneStep``) are all ``TrainStep`` s."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..distributed import DistInfo
from ..engine import streams
from ..engine.runtime import per_rank_batch
from ..maths.augment import GlobalBatchRNG
from ..maths.optim import set_schedule


class TrainStep:
    """The step's skeleton. ``seed`` is the run's (or one fine-tuned model's) seed; ``global_batch`` the batch the
    augmentation is drawn for, of which this rank holds ``batch`` samples from ``rank * batch`` on."""

    optimizer: torch.optim.Optimizer  # set by the method, over what it trains

    def __init__(self, device: torch.device | str, dist: DistInfo | None, seed: int, global_batch: int,
                 batch: int | None = None):
        self.device, self.dist = torch.device(device), dist or DistInfo()
        self.seed, self.global_batch = seed, global_batch
        self.batch = per_rank_batch(global_batch, self.dist.world) if batch is None else batch
        self.generator = torch.Generator(self.device)  # reseeded every step (engine/streams.py)

    def batch_rng(self, step: int) -> GlobalBatchRNG:
        """This step's augmentation stream: drawn for the global batch and sliced to this rank's samples, so the
        views do not depend on the number of processes; a per-step seed, so a checkpoint needs no RNG state."""
        self.generator.manual_seed(streams.step_seed(self.seed, step, streams.AUGMENT))
        return GlobalBatchRNG(self.generator, self.dist.rank * self.batch, self.batch, self.global_batch)

    def seed_drop_path(self, step: int) -> None:
        """Drop path draws from torch's global stream, per rank (engine/streams.py)."""
        torch.manual_seed(streams.step_seed(self.seed, step, streams.drop_path(self.dist.rank)))

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        """``module`` as the step calls it: DDP-wrapped with several processes."""
        if self.dist.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)

    def train_step(self, inputs: Any, sched: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimisation step on ``inputs`` at ``sched`` (its ``lr`` and ``wd``): the step every task runs."""
        set_schedule(self.optimizer, sched.lr, sched.wd)
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.forward_backward(inputs, sched)
        self.optimizer_step(sched)
        self.after_update(sched)
        return loss, terms

    def clip(self, parameters: Iterable[Tensor], max_norm: float) -> None:
        """Gradient clipping by the global norm (0: none)."""
        if max_norm > 0:
            nn.utils.clip_grad_norm_(parameters, max_norm)

    # ---- what each method provides -----------------------------------------------------------
    def forward_backward(self, inputs: Any, sched: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's loss, backpropagated; returns it and each term by name (detached device tensors)."""
        raise NotImplementedError

    def optimizer_step(self, sched: Any) -> None:
        """Clip, drop frozen gradients, then the optimizer's update."""
        raise NotImplementedError

    def after_update(self, sched: Any) -> None:
        """What follows the optimizer's update (DINO: the teacher's EMA); nothing by default."""
