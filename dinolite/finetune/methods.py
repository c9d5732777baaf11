"""The four methods as runs: which models are trained (with which objective and teacher), where they
live in the run directory, and the results table each run ends with.

Every model of every method gets the same budget: ``optim.epochs`` epochs of the same loader, i.e.
the same number of optimisation steps. Born-again trains G models of that budget in sequence,
generation k in ``gen<k>/``, resumable mid-generation; the others train one model in the run directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..augment import EvalTransform
from ..distributed import DistInfo, barrier
from ..engine.lock import run_lock
from ..engine.rundir import RunDir, open_run_dir
from ..engine.runtime import run_threads, start
from .augment import ConsistencyView
from .config import FinetuneConfig
from .data import LabeledData, build_data
from .exits import check_exit_blocks, default_exit_blocks
from .model import (
    MODEL_FILE,
    InitSpec,
    build_model,
    check_teacher,
    model_meta,
    normalisation,
    read_model,
    rebuild,
    resolve_init,
    save_model,
)
from .objectives import BornAgain, Consistency, Layerwise, Supervised
from .tables import born_again_rows, layerwise_rows, markdown, single_rows, write_tables
from .trainer import LOGITS_FILE, FinetuneTrainer, is_done, load_logits, predict, save_logits

# A resume may not change these (the models' shapes, their views, the data), and needs
# train.resume_schedule_change=true for those (the schedule's length); see engine/rundir.py.
FIXED_ON_RESUME = ("data.source", "data.root", "data.train_dir", "augment.image_size", "layerwise.exits",
                   "layerwise.hint_weight", "born_again.generations", "born_again.teacher")
SCHEDULE = ("optim.epochs", "optim.batch_size")


def prepare_run_dir(cfg: FinetuneConfig, is_main: bool) -> RunDir:
    """Create the run directory, refuse one of another recipe, method or init (or a resume that changes the
    models or the data), save the resolved config."""
    return open_run_dir(cfg, is_main, identity=("recipe", "method", "init"), fixed=FIXED_ON_RESUME, schedule=SCHEDULE)


@dataclass
class Context:
    """What every model of a run shares: config, data, init weights, view settings, device, ranks."""

    cfg: FinetuneConfig
    data: LabeledData
    init: InitSpec
    mean: list[float]
    std: list[float]
    image_size: int
    dist: DistInfo
    device: torch.device
    progress: bool
    schedule_changes: dict = field(default_factory=dict)  # accepted on resume (recorded in each model's metrics)

    @property
    def steps_per_model(self) -> int:
        return self.cfg.optim.epochs * self.data.train_loader(self.cfg.train.seed).steps_per_epoch

    def exit_blocks(self) -> list[int]:
        if self.cfg.method != "layerwise":
            return []
        return list(self.cfg.layerwise.exits) or default_exit_blocks(self.init.depth)

    def build(self, seed: int):
        """A fresh model from the init weights; heads drawn from ``seed``."""
        c = self.cfg
        return build_model(self.init, len(self.data.classes), self.exit_blocks(),
                           c.method == "layerwise" and c.layerwise.hint_weight > 0, c.model.drop_path_rate,
                           c.model.head_init_std, seed)

    def meta(self, model) -> dict:
        return {**model_meta(model, self.init, self.data.classes, self.image_size, self.mean, self.std),
                "method": self.cfg.method}

    def train(self, out_dir: Path, objective, seed: int, stop_at: int, desc: str):
        """Train (or resume, or read back) one model: ``(finished, test logits on rank 0 else None)``.

        Every rank returns only once rank 0 has written the finished model (the next generation reads it).
        """
        if is_done(out_dir):
            return True, (load_logits(out_dir / LOGITS_FILE) if self.dist.is_main else None)
        model = self.build(seed)
        trainer = FinetuneTrainer(self.cfg, self.data, model, objective(model), out_dir, self.meta(model), self.dist,
                                  self.device, seed, self.mean, self.std, self.image_size, self.progress, stop_at, desc,
                                  self.schedule_changes)
        if not trainer.fit():
            return False, None
        logits = trainer.finish()
        barrier()
        return True, logits


def _stopped(cfg: FinetuneConfig, is_main: bool) -> None:
    if is_main:
        print(f"stopped after train.stop_after_steps={cfg.train.stop_after_steps} steps; run the same command "
              f"(without the override) to resume", flush=True)


def _results(ctx: Context, rows: list[dict], labels: Tensor, models_trained: int) -> dict:
    c = ctx.cfg
    return {"method": c.method, "init": c.init, "recipe": c.recipe, "epochs": c.optim.epochs,
            "steps_per_model": ctx.steps_per_model, "models_trained": models_trained,
            "total_steps": models_trained * ctx.steps_per_model, "global_batch": c.optim.batch_size,
            "train_images": len(ctx.data.train), "test_images": len(labels), "rows": rows,
            "top1": rows[0]["top1"] if c.method != "layerwise" else next(r["top1"] for r in rows
                                                                          if r["model"].startswith("final"))}


def run_single(ctx: Context, run_dir: Path) -> dict | None:
    """supervised, layerwise or consistency: one model, in the run directory."""
    c, smooth = ctx.cfg, ctx.cfg.optim.label_smoothing
    if c.method == "supervised":
        def objective(model):
            return Supervised(smooth)
    elif c.method == "layerwise":
        lw = c.layerwise

        def objective(model):
            return Layerwise(lw.temperature, lw.kd_weight, lw.hint_weight, smooth)
    else:
        cc = c.consistency

        def objective(model):
            view = ConsistencyView(cc.strength, ctx.mean, ctx.std).to(ctx.device)
            return Consistency(view, cc.weight, cc.temperature, smooth)
    finished, out = ctx.train(run_dir, objective, c.train.seed, c.train.stop_after_steps, c.method)
    if not finished:
        _stopped(c, ctx.dist.is_main)
    if out is None:
        return None
    logits, labels = out
    depth = ctx.init.depth
    if c.method == "layerwise":
        rows = layerwise_rows(logits, labels, ctx.exit_blocks() + [depth], list(c.layerwise.thresholds))
    elif c.method == "consistency":
        cc = c.consistency
        note = f"lambda {cc.weight:g}, T {cc.temperature:g}, strength {cc.strength:g}"
        rows = single_rows(logits, labels, depth, note)
    else:
        rows = single_rows(logits, labels, depth, f"label smoothing {smooth:g}" if smooth else "")
    return _results(ctx, rows, labels, 1)


def load_teacher(path: Path, student_meta: dict, device: torch.device):
    """A previous generation (or the given teacher): checked against the student, frozen, in eval mode."""
    meta, state, source = read_model(path)
    check_teacher(meta, student_meta, source)
    return rebuild(meta, state, source).requires_grad_(False).to(device), meta


def _external_generation0(ctx: Context, out_dir: Path) -> tuple[list[Tensor], Tensor] | None:
    """``born_again.teacher`` as generation 0: checked (on every rank), evaluated on this test split and
    copied into gen0/ by rank 0; its test logits on rank 0."""
    if is_done(out_dir):
        return load_logits(out_dir / LOGITS_FILE) if ctx.dist.is_main else None
    student_meta = ctx.meta(ctx.build(ctx.cfg.train.seed))
    teacher, meta = load_teacher(Path(ctx.cfg.born_again.teacher), student_meta, ctx.device)
    logits = None
    if ctx.dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        view = EvalTransform(ctx.image_size, ctx.cfg.augment.crop_ratio, ctx.mean, ctx.std).to(ctx.device)
        logits = predict(teacher, ctx.data, view, ctx.cfg.eval.batch_size, ctx.device)
        save_logits(*logits, out_dir / LOGITS_FILE)
        save_model(teacher, {**meta, "born_again_teacher": str(ctx.cfg.born_again.teacher)}, out_dir / MODEL_FILE)
    barrier()
    return logits


def run_born_again(ctx: Context, run_dir: Path) -> dict | None:
    """G generations: 0 supervised (or ``born_again.teacher``), k >= 1 distilled from k - 1; each a fresh
    model from the init weights, with seed ``train.seed + k`` (heads, data order, augmentation)."""
    c, b = ctx.cfg, ctx.cfg.born_again
    budget, steps, trained = c.train.stop_after_steps, ctx.steps_per_model, 0
    generations: list[list[Tensor]] = []
    labels = None
    for k in range(b.generations):
        out_dir = run_dir / f"gen{k}"
        if k == 0 and b.teacher:
            out = _external_generation0(ctx, out_dir)
        else:
            stop_at = 0
            if budget:
                stop_at = budget - trained * steps
                if stop_at <= 0:
                    _stopped(c, ctx.dist.is_main)
                    return None
            prev = run_dir / f"gen{k - 1}"

            def objective(model, prev=prev, k=k):
                if k == 0:
                    return Supervised(c.optim.label_smoothing)
                teacher, _ = load_teacher(prev, ctx.meta(model), ctx.device)
                return BornAgain(teacher, b.alpha, b.temperature, c.optim.label_smoothing)
            finished, out = ctx.train(out_dir, objective, c.train.seed + k, stop_at, f"generation {k}")
            trained += 1
            if not finished:
                _stopped(c, ctx.dist.is_main)
                return None
        if out is not None:
            generations.append(out[0])
            labels = out[1]
    if not ctx.dist.is_main or labels is None:
        return None
    note = f"given teacher {b.teacher}" if b.teacher else "supervised"
    rows = born_again_rows(generations, labels, note)
    results = _results(ctx, rows, labels, trained)
    results["top1"] = rows[len(generations) - 1]["top1"]  # the last generation, a single network
    results["born_again"] = {"generations": b.generations, "alpha": b.alpha, "temperature": b.temperature,
                             "teacher": b.teacher}
    return results


def finetune(cfg: FinetuneConfig, progress: bool = True, dist: DistInfo | None = None) -> dict | None:
    """Run (or resume) the fine-tuning of ``cfg``; the results dict on rank 0 once finished, else None."""
    with run_threads(cfg.train.threads):  # the setting is this run's, not the calling process's
        return _finetune(cfg, progress, dist)


def _finetune(cfg: FinetuneConfig, progress: bool, dist: DistInfo | None) -> dict | None:
    t0 = time.time()
    device, dist = start(cfg.train.device, dist)
    data = build_data(cfg, dist.rank, dist.world, device.type == "cuda")
    init = resolve_init(cfg, data.channels)
    mean, std = normalisation(cfg, init, data.channels)
    ctx = Context(cfg, data, init, mean, std, cfg.augment.image_size or init.img_size, dist, device,
                  progress and dist.is_main)
    if cfg.method == "layerwise":
        check_exit_blocks(ctx.exit_blocks(), init.depth)
    with run_lock(cfg.train.output_dir, take=dist.is_main):  # one process owns the run directory
        run = prepare_run_dir(cfg, dist.is_main)  # only a config that passed every check is saved
        ctx.schedule_changes, run_dir = run.schedule_changes, run.path
        results = run_born_again(ctx, run_dir) if cfg.method == "born-again" else run_single(ctx, run_dir)
    if results is not None and dist.is_main:
        md, _ = write_tables(run_dir, results)
        print(markdown(results), flush=True)
        print(f"finished in {time.time() - t0:.0f} s; tables in {md} and {md.with_suffix('.json')}", flush=True)
    return results
