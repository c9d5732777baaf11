"""A DINO training loop over the caller's parts, for custom pipelines in Python.

``DINOTrainer`` takes a student / teacher pair (``build_student_teacher``), a ``MultiCrop`` and any
iterable of image batches, and runs DINO's step with its schedules (cosine LR with warm-up, cosine
weight decay and teacher momentum, teacher-temperature warm-up, last-layer freeze). Hooks run after
every step and every epoch. The ``dinolite pretrain`` command adds what a long run needs around the
same step: its data sources, checkpoints and exact resume, several processes, the time budget and
the monitor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized

import torch
from torch import Tensor

from .augment import MultiCrop
from .loss import DINOLoss
from .models import DINOModel, ema_update
from .optim import build_optimizer, cancel_last_layer_grads, set_schedule
from .schedules import cosine, teacher_temperature

Hook = Callable[["DINOTrainer", dict], None]


class DINOTrainer:
    """DINO on the caller's model and data; ``fit`` returns one dict of figures per step."""

    def __init__(self, student: DINOModel, teacher: DINOModel, multicrop: MultiCrop | None = None,
                 loss: DINOLoss | None = None, *, lr: float = 5e-4, min_lr: float = 1e-6, warmup_steps: int = 0,
                 weight_decay: tuple[float, float] = (0.04, 0.4), momentum_teacher: float = 0.996,
                 teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, warmup_teacher_temp_steps: int = 0,
                 clip_grad: float = 3.0, freeze_last_layer_steps: int = 0, optimizer: str = "adamw",
                 device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.student, self.teacher = student.to(self.device), teacher.to(self.device)
        self.multicrop = (multicrop or MultiCrop()).to(self.device)
        self.loss = (loss or DINOLoss(student.head.last_layer.out_features)).to(self.device)
        self.optimizer = build_optimizer(self.student, self.device, optimizer)
        self.lr, self.min_lr, self.warmup_steps, self.weight_decay = lr, min_lr, warmup_steps, weight_decay
        self.momentum_teacher, self.clip_grad, self.freeze_steps = momentum_teacher, clip_grad, freeze_last_layer_steps
        self.teacher_temps = (warmup_teacher_temp_steps, warmup_teacher_temp, teacher_temp)
        self.step_index, self.total_steps = 0, 1

    def step(self, images: Tensor) -> dict:
        """One DINO step on a batch of images (uint8 or float in [0, 1], ``[B, C, H, W]``)."""
        s, total = self.step_index, self.total_steps
        lr = cosine(s, total, self.lr, self.min_lr, self.warmup_steps)
        wd = cosine(s, total, *self.weight_decay)
        momentum = cosine(s, total, self.momentum_teacher, 1.0)
        temp = teacher_temperature(s, *self.teacher_temps)
        set_schedule(self.optimizer, lr, wd)
        crops = self.multicrop(images.to(self.device, non_blocking=True))
        with torch.no_grad():
            teacher_out = self.teacher([crops.globals_])  # the teacher sees the global views only
        loss = self.loss(self.student(crops.by_resolution()), teacher_out, temp)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.clip_grad)
        cancel_last_layer_grads(self.student.head.last_layer, s, self.freeze_steps)
        self.optimizer.step()
        ema_update(self.teacher, self.student, momentum)
        self.step_index += 1
        return {"step": self.step_index, "loss": loss.item(), "lr": lr, "wd": wd, "momentum": momentum,
                "teacher_temp": temp}

    def fit(self, data: Iterable, epochs: int = 1, steps_per_epoch: int | None = None,
            after_step: Hook | None = None, after_epoch: Hook | None = None) -> list[dict]:
        """``epochs`` passes over ``data`` (batches of images, or tuples whose first item is the images).

        The schedules span ``epochs x steps_per_epoch`` steps (``len(data)`` when it has a length).
        ``after_step(trainer, figures)`` and ``after_epoch(trainer, {"epoch": e, "steps": n})`` run after each.
        """
        per_epoch = steps_per_epoch or (len(data) if isinstance(data, Sized) else None)
        if per_epoch is None:
            raise ValueError("data has no length: pass steps_per_epoch so the schedules know the run's length")
        self.total_steps = max(1, epochs * per_epoch)
        history: list[dict] = []
        for epoch in range(epochs):
            for i, batch in enumerate(data):
                if i >= per_epoch:
                    break
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                history.append(self.step(images))
                if after_step is not None:
                    after_step(self, history[-1])
            if after_epoch is not None:
                after_epoch(self, {"epoch": epoch + 1, "steps": self.step_index})
        return history
