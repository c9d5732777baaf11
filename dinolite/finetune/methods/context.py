"""What every model of a fine-tuning run shares (config, data, init weights, views, device, ranks), and the
steps each method's ``run`` is made of: train or read back one model, report a stop, assemble the results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ...distributed import DistInfo, barrier
from ..config import FinetuneConfig
from ..data import LabeledData
from ..exits import MultiExitViT
from ..model import InitSpec, build_model, model_meta
from ..objectives import Objective
from ..trainer import LOGITS_FILE, FinetuneTrainer, is_done, load_logits

Logits = tuple[list[Tensor], Tensor]  # per-exit test logits (shallow to deep) and the test labels


@dataclass
class Context:
    """One fine-tuning run's shared state; ``exits`` and ``hint`` are the method's (``FinetuneMethod.exit_blocks``)."""

    cfg: FinetuneConfig
    data: LabeledData
    init: InitSpec
    mean: list[float]
    std: list[float]
    image_size: int
    dist: DistInfo
    device: torch.device
    progress: bool
    exits: list[int] = field(default_factory=list)  # blocks carrying an exit before the final classifier
    hint: bool = False  # feature-hint adapters on the exits
    schedule_changes: dict = field(default_factory=dict)  # accepted on resume (recorded in each model's metrics)
    setup: Callable[[FinetuneTrainer], None] | None = None  # called with each trainer before its first step

    @property
    def steps_per_model(self) -> int:
        return self.cfg.optim.epochs * self.data.train_loader(self.cfg.train.seed).steps_per_epoch

    def build(self, seed: int) -> MultiExitViT:
        """A fresh model from the init weights; heads drawn from ``seed``."""
        m = self.cfg.model
        return build_model(self.init, len(self.data.classes), self.exits, self.hint, m.drop_path_rate,
                           m.head_init_std, seed)

    def meta(self, model: MultiExitViT) -> dict:
        return {**model_meta(model, self.init, self.data.classes, self.image_size, self.mean, self.std),
                "method": self.cfg.method}

    def train(self, out_dir: Path, objective: Callable[[MultiExitViT], Objective], seed: int, stop_at: int,
              desc: str) -> tuple[bool, Logits | None]:
        """Train (or resume, or read back) one model: ``(finished, test logits on rank 0 else None)``.

        Every rank returns only once rank 0 has written the finished model (the next generation reads it).
        """
        if is_done(out_dir):
            return True, (load_logits(out_dir / LOGITS_FILE) if self.dist.is_main else None)
        model = self.build(seed)
        trainer = FinetuneTrainer(self.cfg, self.data, model, objective(model), out_dir, self.meta(model), self.dist,
                                  self.device, seed, self.mean, self.std, self.image_size, self.progress, stop_at, desc,
                                  self.schedule_changes)
        if self.setup is not None:
            self.setup(trainer)
        if not trainer.fit():
            return False, None
        logits = trainer.finish()
        barrier()
        return True, logits

    def stopped(self) -> None:
        """Say (rank 0) that the run stopped at ``train.stop_after_steps`` and how to go on."""
        if self.dist.is_main:
            print(f"stopped after train.stop_after_steps={self.cfg.train.stop_after_steps} steps; run the same "
                  f"command (without the override) to resume", flush=True)

    def results(self, rows: list[dict], labels: Tensor, models_trained: int, top1: float) -> dict:
        """The run's results (results.json): what was trained on what, its table rows and headline accuracy."""
        c = self.cfg
        return {"method": c.method, "init": c.init, "recipe": c.recipe, "epochs": c.optim.epochs,
                "steps_per_model": self.steps_per_model, "models_trained": models_trained,
                "total_steps": models_trained * self.steps_per_model, "global_batch": c.optim.batch_size,
                "train_images": len(self.data.train), "test_images": len(labels), "rows": rows, "top1": top1}
