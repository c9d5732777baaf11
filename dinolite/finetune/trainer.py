"""The fine-tuning loop of one model: augmentation, objective, AdamW step, schedule, test-split
evaluation every epoch, atomic checkpoints and exact resume. Wiring only: the maths is in
``losses``/``objectives``, the figures in ``metrics``, the orchestration of methods in ``methods``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..augment import EvalTransform
from ..distributed import DistInfo, barrier
from ..export import write_safetensors
from ..loggers import MetricsWriter
from ..schedules import cosine, scaled_lr
from ..errors import TrainingDiverged
from ..weights import load_into
from .augment import LabeledAugment
from .config import FinetuneConfig, as_dict
from .data import LabeledData, check_batch_labels
from .exits import MultiExitViT
from .metrics import accuracy
from .model import MODEL_FILE, save_model
from ..optim import set_schedule
from ..train import step_seed
from .optim import build_optimizer

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
    return [torch.cat(z) for z in zip(*outs)], torch.cat(labels)


class FinetuneTrainer:
    """Trains ``model`` with ``objective`` into ``out_dir`` (checkpoints, metrics, final model and test logits).

    ``seed`` sets the head-independent randomness of this model: data order, augmentation, drop path.
    Only rank 0 writes files and evaluates; every rank trains on its share of each global batch.
    """

    def __init__(self, cfg: FinetuneConfig, data: LabeledData, model: MultiExitViT, objective, out_dir: Path,
                 meta: dict, dist: DistInfo, device: torch.device, seed: int, mean, std, image_size: int,
                 progress: bool = True, stop_at: int = 0, desc: str = "finetune"):
        self.cfg, self.data, self.objective, self.meta, self.dist, self.device = cfg, data, objective, meta, dist, device
        self.out_dir, self.desc, self.progress = Path(out_dir), desc, progress and dist.is_main
        if dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.loader = data.train_loader(seed)
        self.global_batch = cfg.optim.batch_size
        self.module = model.to(device)
        self.model = self.module
        if dist.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[dist.local_rank] if device.type == "cuda" else None)
        a = cfg.augment
        self.augment = LabeledAugment(image_size, a.scale, a.flip_p, a.jitter_p, a.brightness, a.contrast,
                                      a.saturation, mean, std).to(device)
        self.eval_view = EvalTransform(image_size, a.crop_ratio, mean, std).to(device)
        self.optimizer = build_optimizer(self.module, self.module.depth, cfg.optim.layer_decay, device)
        self.seed = seed
        self.generator = torch.Generator(device)  # reseeded every step, as in pretraining (train.step_seed)
        self.stop = min(self.total_steps, stop_at) if stop_at > 0 else self.total_steps
        self.step, self.history, self.last_good = 0, [], None
        self.final_logits: tuple[list[Tensor], Tensor] | None = None
        t = cfg.train
        self.metrics = MetricsWriter(self.out_dir / "metrics.jsonl", dist.is_main, t.loggers, as_dict(cfg),
                                     t.wandb_project, t.wandb_mode)
        self._resume()

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

    def save(self) -> None:
        if self.dist.is_main:
            self.last_good = ckpt.save_checkpoint(self.state(), self.out_dir, self.step, self.cfg.train.keep_checkpoints)
        barrier()

    def _resume(self) -> None:
        path, state = ckpt.latest_valid(self.out_dir, move_aside=self.dist.is_main)
        if state is None:
            ckpt.refuse_unreadable(self.out_dir)
            return
        load_into(self.module, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.last_good = int(state["step"]), list(state["history"]), path
        if self.dist.is_main:
            print(f"resumed from {path} at step {self.step}", flush=True)

    # ---- training ----------------------------------------------------------------------------
    def train_step(self, images: Tensor, hw: Tensor, labels: Tensor, lr: float):
        set_schedule(self.optimizer, lr, self.cfg.optim.weight_decay)
        # Per-step seeds: a checkpoint needs no RNG state and resumes exactly on any number of ranks.
        self.generator.manual_seed(step_seed(self.seed, self.step, 1 + self.dist.rank))
        torch.manual_seed(step_seed(self.seed, self.step, 1_000_001 + self.dist.rank))  # drop path
        raw = self.augment(images.to(self.device, non_blocking=True), hw, self.generator)
        x = self.augment.normalise(raw)
        y = labels.to(self.device, non_blocking=True)
        self.model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, logs = self.objective(self.model, x, raw, y, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.clip_grad)
        self.optimizer.step()
        correct = (logs.pop("final").argmax(dim=1) == y).sum()
        return loss.detach(), logs, correct

    def _check_finite(self, finite: Tensor) -> None:
        if not bool(finite):
            where = f"; the last good checkpoint is {self.last_good}" if self.last_good else ""
            raise TrainingDiverged(f"the loss became NaN or infinite by step {self.step} of {self.out_dir}{where}; "
                                   f"lower optim.lr and run the command again")

    def fit(self) -> bool:
        """Train up to the end (or ``stop_at``); True when the model is finished."""
        cfg, spe = self.cfg, self.steps_per_epoch
        bar = tqdm(total=self.stop, initial=self.step, desc=self.desc, disable=not self.progress, dynamic_ncols=True)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        sums: dict[str, Tensor] = {}
        last_log, last_step, last_ckpt = time.time(), self.step, time.time()
        while self.step < self.stop:
            epoch, in_epoch = divmod(self.step, spe)
            for images, hw, labels in self.loader.epoch(epoch, in_epoch):
                check_batch_labels(labels, len(self.data.classes), "the training data")
                lr = self.lr_at(self.step)
                loss, logs, correct = self.train_step(images, hw, labels, lr)
                finite &= torch.isfinite(loss)
                for k, v in {"loss": loss, "train_acc": correct.float() / len(labels), **logs}.items():
                    sums[k] = sums.get(k, 0) + v
                self.step += 1
                bar.update(1)
                end_of_epoch = self.step % spe == 0
                if self.step % cfg.train.log_every == 0 or end_of_epoch or self.step == self.stop:
                    self._check_finite(finite)  # one host synchronisation per log interval
                    now, n = time.time(), self.step - last_step
                    record = {"step": self.step, "epoch": self.step / spe, "lr": lr,
                              **{k: float(v) / n for k, v in sums.items()},
                              "images_per_s": n * self.global_batch / max(now - last_log, 1e-9)}
                    record["train_acc"] *= 100
                    self.metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}")
                    sums, last_log, last_step = {}, now, self.step
                if end_of_epoch and ((self.step // spe) % cfg.eval.every_epochs == 0 or self.step == self.total_steps):
                    self.evaluate_epoch()
                    last_log = time.time()  # the throughput counts training only
                minutes = (time.time() - last_ckpt) / 60
                if end_of_epoch or self.step == self.stop or minutes >= cfg.train.checkpoint_every_minutes:
                    self._check_finite(finite)  # never a checkpoint of diverged weights
                    self.save()
                    last_ckpt = time.time()
                if self.step >= self.stop:
                    break
        bar.close()
        return self.step >= self.total_steps

    # ---- evaluation --------------------------------------------------------------------------
    def predict(self) -> tuple[list[Tensor], Tensor]:
        return predict(self.module, self.data, self.eval_view, self.cfg.eval.batch_size, self.device)

    def evaluate_epoch(self) -> None:
        """Test-split accuracy of every exit (rank 0), recorded in the history and the metrics."""
        if self.dist.is_main:
            logits, labels = self.predict()
            record = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                      "test_top1": [accuracy(z, labels) for z in logits]}
            self.history.append(record)
            self.metrics.write(record)
            if self.progress:
                names = [f"block {d}" for d in self.module.exit_depths[:-1]] + ["final"]
                tqdm.write(f"{self.desc} epoch {record['epoch']}: test top-1 "
                           + ", ".join(f"{n} {a:.2f} %" for n, a in zip(names, record["test_top1"])))
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
