"""DINO in the caller's own loop: the step of ``dinolite pretrain`` over any iterable of image batches.

``DINOTrainer`` runs :meth:`dino.DINOMethod.train_step`, the one DINO step of the package (or, for a
distillation recipe, :meth:`distill.DistillMethod.train_step`), with the
recipe's schedules (the same config, LR scaling rule, objective options, bf16 on GPU and random
streams), so a recipe gives the same weights through this API as through the command line for the
same batches. Hooks run after every step and every epoch. ``dinolite pretrain`` adds what a long run
needs around it: data sources, checkpoints and exact resume, several processes, the time budget,
evaluation and the monitor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized

import torch
from torch import Tensor, nn

from ..config import Config, load_config
from ..maths.models import DINOModel
from ..maths.schedules import Plan
from ..methods.dino import DINOMethod, Schedule
from ..methods.factory import build_method

Hook = Callable[["DINOTrainer", dict], None]


class DINOTrainer:
    """DINO on the caller's data with a recipe's settings; ``fit`` returns one dict of figures per step.

    ``cfg`` is a :class:`Config`, a recipe name or YAML path (default: the quickstart), with
    ``overrides`` (``["optim.batch_size=64", "loss.ibot_weight=0"]``) applied as on the command line (a typed
    ``optim.epochs`` or ``optim.total_steps`` is the run's length; one beside a typed time budget is refused).
    ``models`` replaces the recipe's student / teacher pair (``build_student_teacher``) by the caller's.
    ``optim.batch_size`` is the batch the LR scaling rule sees: give batches of that size.
    """

    def __init__(self, cfg: Config | str | None = None, overrides: list[str] | None = None, *, in_chans: int = 3,
                 device: str | torch.device | None = None, models: tuple[DINOModel, DINOModel] | None = None):
        if not isinstance(cfg, Config):
            cfg = load_config(cfg, overrides, command_line=True)  # a typed length wins, as on the command line
        elif overrides:
            raise ValueError("overrides apply to a recipe name or path; change a Config's fields directly")
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # a distillation recipe gives the students of dinolite distill; a DINO one continues from model.init if set
        self.method, _ = build_method(cfg, in_chans, self.device, models=models)
        self.step_index = 0
        self.plan: Plan | None = None

    @property
    def student(self) -> DINOModel:
        """DINO's student (DINO recipes)."""
        assert isinstance(self.method, DINOMethod)
        return self.method.student_module

    @property
    def teacher(self) -> DINOModel:
        """DINO's EMA teacher (DINO recipes)."""
        assert isinstance(self.method, DINOMethod)
        return self.method.teacher

    def backbones(self) -> dict[str, nn.Module]:
        """What the run trains, by name: DINO's teacher backbone, or each distilled student's."""
        return {ev.name: ev.backbone for ev in self.method.evaluated()}

    def step(self, images: Tensor, hw: Tensor | None = None) -> dict:
        """One DINO step on a batch (uint8 or float in [0, 1], ``[B, C, H, W]``; ``hw`` the valid sizes).

        The figures are device tensors and plain floats: nothing waits for the device (``float(f["loss"])``
        does).
        """
        if self.plan is None:
            raise RuntimeError("DINOTrainer.step needs the run's length first: call fit(), or set trainer.plan "
                               "= Plan.of(cfg.optim, cfg.loss, steps_per_epoch)")
        method, s = self.method, self.step_index
        sched = method.schedule(s, self.plan)
        loss, terms = method.train_step(method.make_crops(images, hw, s), sched)
        self.step_index += 1
        return {"step": self.step_index, "loss": loss, **terms, **_values(sched)}

    def fit(self, data: Iterable, epochs: int | None = None, steps_per_epoch: int | None = None,
            after_step: Hook | None = None, after_epoch: Hook | None = None) -> list[dict]:
        """``epochs`` passes (default: the recipe's ``optim.epochs``, or ``optim.total_steps`` steps) over
        ``data``: batches of images, tuples ``(images, labels)`` or ``(images, hw, ...)`` (``hw`` ``[B, 2]``: the
        valid part of each image), or a dinolite loader (``data.build_loader``:
        epoch ``e`` is ``data.epoch(e)``, shuffled as ``dinolite pretrain`` shuffles it).

        The schedules span the run (``steps_per_epoch`` defaults to ``len(data)``). ``after_step(trainer,
        figures)`` and ``after_epoch(trainer, {"epoch": e, "steps": n})`` run after each. The returned
        figures are floats, read from the device once at the end.
        """
        loader = hasattr(data, "epoch") and hasattr(data, "steps_per_epoch")  # a dinolite loader: epoch by epoch
        per_epoch = steps_per_epoch or (data.steps_per_epoch if loader else  # type: ignore[attr-defined]
                                        len(data) if isinstance(data, Sized) else None)
        if per_epoch is None:
            raise ValueError("data has no length: pass steps_per_epoch so the schedules know the run's length")
        # ``epochs`` replaces the recipe's length for this fit; the config itself stays as it was
        total = epochs * per_epoch if epochs is not None else None
        self.plan = plan = Plan.of(self.cfg.optim, self.cfg.loss, per_epoch, total=total)
        history: list[dict] = []
        epoch = 0
        while self.step_index < plan.total:
            before = self.step_index
            for i, batch in enumerate(data.epoch(epoch) if loader else data):  # type: ignore[attr-defined]
                if i >= per_epoch or self.step_index >= plan.total:
                    break
                history.append(self.step(*_images_and_sizes(batch)))
                if after_step is not None:
                    after_step(self, history[-1])
            if self.step_index == before:
                raise ValueError("data gave no batch: an iterator is used up after one pass, pass a list or a loader")
            epoch += 1
            if after_epoch is not None:
                after_epoch(self, {"epoch": epoch, "steps": self.step_index})
        return _to_floats(history)


def _images_and_sizes(batch) -> tuple[Tensor, Tensor | None]:
    """A batch's images and, when its second item is ``[B, 2]`` valid sizes (dinolite's loaders), those."""
    if not isinstance(batch, (tuple, list)):
        return batch, None
    images, second = batch[0], batch[1] if len(batch) > 1 else None
    sizes = isinstance(second, Tensor) and second.ndim == 2 and second.shape == (len(images), 2)
    return images, second if sizes else None


def _values(sched: Schedule) -> dict[str, float]:
    return {"lr": sched.lr, "wd": sched.wd, "momentum": sched.momentum, "teacher_temp": sched.teacher_temp}


def _to_floats(history: list[dict]) -> list[dict]:
    """Every tensor of ``history`` as a float, with one read from the device."""
    keys = [(i, k) for i, h in enumerate(history) for k, v in h.items() if isinstance(v, Tensor)]
    if not keys:
        return history
    values = torch.stack([history[i][k].float() for i, k in keys]).tolist()
    out = [dict(h) for h in history]
    for (i, k), v in zip(keys, values, strict=True):
        out[i][k] = v
    return out
