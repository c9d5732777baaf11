"""Fine-tuning one model as a task of the run engine: augmentation, objective, AdamW step, schedule and
test-split evaluation every epoch. The loop, its collective decisions, checkpoints and resume are the
engine's (``dinolite/engine/``); the maths is in ``losses``/``objectives``, the figures in ``metrics``,
the orchestration of methods in ``methods``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from ..config import as_dict
from ..distributed import DistInfo, barrier
from ..engine.loop import StepOut, resume_task, start_engine
from ..errors import UserError
from ..export import write_safetensors
from ..maths.augment import EvalTransform
from ..maths.schedules import cosine, scaled_lr
from ..methods.step import TrainStep
from ..weights import load_into
from .augment import LabeledAugment
from .config import FinetuneConfig
from .data import LabeledData, check_batch_labels
from .exits import MultiExitViT
from .metrics import accuracy
from .model import MODEL_FILE, save_model
from .optim import build_layerwise_optimizer

LOGITS_FILE = "test_logits.safetensors"


def save_logits(logits: list[Tensor], labels: Tensor, path: Path) -> None:
    tensors = {f"exit{i}": z.float() for i, z in enumerate(logits)}
    write_safetensors({**tensors, "labels": labels}, path)


def load_logits(path: Path) -> tuple[list[Tensor], Tensor]:
    t = load_file(str(path))
    return [t[f"exit{i}"] for i in range(len(t) - 1)], t["labels"]


@torch.no_grad()
def predict(model: MultiExitViT, data: LabeledData, view: EvalTransform, batch_size: int,
            device: torch.device) -> tuple[list[Tensor], Tensor]:
    """Per-exit logits ``[N, C]`` (CPU, float32) of the whole test split, and its labels."""
    was_training = model.training
    model.eval()
    outs: list[list[Tensor]] = []
    labels = []
    for images, hw, y in data.test_batches(batch_size):
        check_batch_labels(y, len(data.classes), "the test data")
        x = view(images.to(device, non_blocking=True), hw)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outs.append([z.float().cpu() for z in model(x)])
        labels.append(y)
    model.train(was_training)
    return [torch.cat(z) for z in zip(*outs, strict=True)], torch.cat(labels)


@dataclass(frozen=True)
class FinetuneSchedule:
    """A fine-tuning step's scheduled values."""

    step: int
    lr: float
    wd: float


class FinetuneStep(TrainStep):
    """Fine-tuning's method object on the shared step (``step.TrainStep``: seeds, the global batch's augmentation
    stream, DDP, the optimizer's step): the views of a labelled batch, the method's objective (supervised,
    born-again, layer-wise, consistency: each gives its own), clipping."""

    def __init__(self, model: MultiExitViT, objective, augment: LabeledAugment, cfg: FinetuneConfig,
                 dist: DistInfo, device: torch.device, seed: int, batch: int):
        super().__init__(device, dist, seed, cfg.optim.batch_size, batch)
        self.module, self.objective, self.augment, self.clip_grad = model, objective, augment, cfg.optim.clip_grad
        self.model = self.wrap_ddp(self.module)  # what the step calls
        self.optimizer = build_layerwise_optimizer(self.module, self.module.depth, cfg.optim.layer_decay, device)

    def forward_backward(self, inputs: tuple[Tensor, Tensor, Tensor], sched: FinetuneSchedule):
        images, hw, labels = inputs
        rng = self.batch_rng(sched.step)
        self.seed_drop_path(sched.step)
        raw = self.augment(images.to(self.device, non_blocking=True), hw, rng)
        y = labels.to(self.device, non_blocking=True)
        self.model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, logs = self.objective(self.model, self.augment.normalise(raw), raw, y, rng)
        loss.backward()
        logs["correct"] = (logs.pop("final").argmax(dim=1) == y).sum()
        return loss.detach(), logs

    def optimizer_step(self, sched: FinetuneSchedule) -> None:
        self.clip(self.module.parameters(), self.clip_grad)
        self.optimizer.step()


class FinetuneTrainer:
    """Trains ``model`` with ``objective`` into ``out_dir`` (checkpoints, metrics, final model and test logits).

    ``seed`` sets the head-independent randomness of this model (data order, augmentation, drop path;
    the streams of ``engine/streams.py``). Only rank 0 writes files and evaluates; every rank trains on
    its share of each global batch, with the views the same samples get in a 1-process run.
    """

    def __init__(self, cfg: FinetuneConfig, data: LabeledData, model: MultiExitViT, objective, out_dir: Path,
                 meta: dict, dist: DistInfo, device: torch.device, seed: int, mean, std, image_size: int,
                 progress: bool = True, stop_at: int = 0, desc: str = "finetune", schedule_changes: dict | None = None):
        self.cfg, self.data, self.objective, self.meta = cfg, data, objective, meta
        self.dist, self.device = dist, device
        self.out_dir, self.desc, self.progress = Path(out_dir), desc, progress and dist.is_main
        if dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.loader = data.train_loader(seed)
        self.global_batch = cfg.optim.batch_size
        self.batch = data.batch_size  # this rank's share of the global batch
        self.module = model.to(device)
        a = cfg.augment
        augment = LabeledAugment(image_size, a.scale, a.flip_p, a.jitter_p, a.brightness, a.contrast,
                                 a.saturation, mean, std).to(device)
        self.eval_view = EvalTransform(image_size, a.crop_ratio, mean, std).to(device)
        self.stepper = FinetuneStep(self.module, objective, augment, cfg, dist, device, seed, self.batch)
        self.optimizer = self.stepper.optimizer
        self.stop = min(self.total_steps, stop_at) if stop_at > 0 else self.total_steps
        self.step, self.history = 0, list[dict]()
        self.final_logits: tuple[list[Tensor], Tensor] | None = None
        self.engine = start_engine(self.out_dir, dist, device, cfg, self.progress, desc, self.global_batch)
        self.metrics = self.engine.metrics
        resume_task(self.engine, self, schedule_changes or {})

    @property
    def last_good(self) -> Path | None:
        return self.engine.last_good

    # ---- schedule, checkpoints ---------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.loader.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.cfg.optim.epochs * self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        return cosine(step, self.total_steps, scaled_lr(o.lr, self.global_batch), o.min_lr, warmup)

    def state(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "history": self.history, "meta": self.meta, "config": as_dict(self.cfg),
                "world": self.dist.world}

    def load_state(self, state: dict, path: Path) -> None:
        load_into(self.module, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])

    def save(self) -> None:
        self.engine.save(self)

    # ---- training ----------------------------------------------------------------------------
    def train_step(self, images: Tensor, hw: Tensor, labels: Tensor, lr: float):
        """One step of the shared skeleton (``FinetuneStep``): the loss, the objective's terms, the correct count."""
        sched = FinetuneSchedule(self.step, lr, self.cfg.optim.weight_decay)
        loss, logs = self.stepper.train_step((images, hw, labels), sched)
        return loss, logs, logs.pop("correct")

    nan_advice = "lower optim.lr and run the command again"

    # ---- the task's parts of the engine's loop -----------------------------------------------
    def batches(self, epoch: int, start: int):
        """The loader's batches, their labels checked on the host before they are copied to the device."""
        for batch in self.loader.epoch(epoch, start):
            check_batch_labels(batch[2], len(self.data.classes), "the training data")
            yield batch

    def run_step(self, batch: tuple) -> StepOut:
        images, hw, labels = batch[:3]
        self._lr = self.lr_at(self.step)
        loss, logs, correct = self.train_step(images, hw, labels, self._lr)
        return StepOut(loss, {"train_acc": correct.float() / len(labels), **logs})

    def log_figures(self) -> dict[str, Tensor]:
        return {}

    def at_log(self, record: dict) -> dict[str, str]:
        record["lr"] = self._lr
        record["train_acc"] *= 100
        return {}

    def replan(self, record: dict, stop: int) -> int:
        return stop  # fine-tuning has no time budget

    def after_epoch(self) -> None:
        if (self.step // self.steps_per_epoch) % self.cfg.eval.every_epochs == 0 or self.step == self.total_steps:
            self.evaluate_epoch()

    def short_epoch(self, epoch: int) -> None:
        root = self.cfg.data.root
        raise UserError(f"the shards of {root} hold fewer samples than their manifest says (epoch {epoch} ended "
                        f"early): run 'dinolite shards --verify {root}' and fix the manifest or rewrite the shards")

    def fit(self) -> bool:
        """Train up to the end (or ``stop_at``); True when the model is finished."""
        self.engine.run(self, self.stop)
        return self.step >= self.total_steps

    # ---- evaluation --------------------------------------------------------------------------
    def predict(self) -> tuple[list[Tensor], Tensor]:
        return predict(self.module, self.data, self.eval_view, self.cfg.eval.batch_size, self.device)

    def evaluate_epoch(self) -> None:
        """Test-split accuracy of every exit (rank 0), recorded in the history and the metrics."""
        if self.dist.is_main:
            logits, labels = self.predict()
            record: dict[str, Any] = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                      "test_top1": [accuracy(z, labels) for z in logits]}
            self.history.append(record)
            self.metrics.write(record)
            if self.progress:
                names = [f"block {d}" for d in self.module.exit_depths[:-1]] + ["final"]
                tqdm.write(f"{self.desc} epoch {record['epoch']}: test top-1 "
                           + ", ".join(f"{n} {a:.2f} %" for n, a in zip(names, record["test_top1"], strict=True)))
            if self.step == self.total_steps:
                self.final_logits = (logits, labels)
        barrier()

    def finish(self) -> tuple[list[Tensor], Tensor] | None:
        """Write the final test logits, then the model (its presence marks the model as done); rank 0."""
        self.metrics.close()  # TensorBoard / W&B: the run's records are all written
        if not self.dist.is_main:
            return None
        logits = self.final_logits or self.predict()
        save_logits(*logits, self.out_dir / LOGITS_FILE)
        save_model(self.module, self.meta, self.out_dir / MODEL_FILE)
        return logits


def is_done(out_dir: Path) -> bool:
    """A finished model: its test logits and (written last) its model file are there."""
    return (Path(out_dir) / MODEL_FILE).is_file() and (Path(out_dir) / LOGITS_FILE).is_file()
