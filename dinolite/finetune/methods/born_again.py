"""``--method born-again`` (Born-Again Neural Networks): G generations trained in sequence, generation k >= 1
distilled from generation k - 1, each in ``gen<k>/`` of the run directory and resumable mid-generation;
its table adds the ensembles of generations 0..k (``born_again.*``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from ...checks import Check, at_least, positive
from ...distributed import barrier
from ...maths.augment import EvalTransform
from ..config import FinetuneConfig
from ..exits import MultiExitViT
from ..model import MODEL_FILE, check_teacher, read_model, rebuild, save_model
from ..objectives import BornAgain, Objective, Supervised
from ..tables import born_again_rows
from ..trainer import LOGITS_FILE, is_done, load_logits, predict, save_logits
from .base import FinetuneMethod
from .context import Context, Logits


def load_teacher(path: Path, student_meta: dict, device: torch.device) -> tuple[MultiExitViT, dict]:
    """A previous generation (or the given teacher): checked against the student, frozen, in eval mode."""
    meta, state, source = read_model(path)
    check_teacher(meta, student_meta, source)
    return rebuild(meta, state, source).requires_grad_(False).to(device), meta


def external_generation0(ctx: Context, out_dir: Path) -> Logits | None:
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


class BornAgainMethod(FinetuneMethod):
    name = "born-again"
    fixed_on_resume = ("born_again.generations", "born_again.teacher")

    @classmethod
    def checks(cls, cfg: FinetuneConfig) -> list[Check]:
        b = cfg.born_again
        return [at_least("born_again.generations", b.generations, 1, " (generation 0 included)"),
                (0 <= b.alpha <= 1, f"born_again.alpha must be in [0, 1], not {b.alpha}"),
                positive("born_again.temperature", b.temperature)]

    def generation_objective(self, ctx: Context, model: MultiExitViT, k: int, prev: Path) -> Objective:
        """Generation 0: supervised; generation k >= 1: distilled from generation k - 1, saved in ``prev``."""
        c, b = ctx.cfg, ctx.cfg.born_again
        if k == 0:
            return Supervised(c.optim.label_smoothing)
        teacher, _ = load_teacher(prev, ctx.meta(model), ctx.device)
        return BornAgain(teacher, b.alpha, b.temperature, c.optim.label_smoothing)

    def run(self, ctx: Context, run_dir: Path) -> dict | None:
        """G generations: 0 supervised (or ``born_again.teacher``), k >= 1 distilled from k - 1; each a fresh
        model from the init weights, with seed ``train.seed + k`` (heads, data order, augmentation).
        ``train.stop_after_steps`` counts the steps of all generations."""
        c, b = ctx.cfg, ctx.cfg.born_again
        budget, steps, trained = c.train.stop_after_steps, ctx.steps_per_model, 0
        generations: list[list[Tensor]] = []
        labels = None
        for k in range(b.generations):
            out_dir = run_dir / f"gen{k}"
            if k == 0 and b.teacher:
                out = external_generation0(ctx, out_dir)
            else:
                stop_at = 0
                if budget:
                    stop_at = budget - trained * steps
                    if stop_at <= 0:
                        ctx.stopped()
                        return None
                objective = partial(self.generation_objective, ctx, k=k, prev=run_dir / f"gen{k - 1}")
                finished, out = ctx.train(out_dir, objective, c.train.seed + k, stop_at, f"generation {k}")
                trained += 1
                if not finished:
                    ctx.stopped()
                    return None
            if out is not None:
                generations.append(out[0])
                labels = out[1]
        if not ctx.dist.is_main or labels is None:
            return None
        rows = born_again_rows(generations, labels, f"given teacher {b.teacher}" if b.teacher else "supervised")
        results = ctx.results(rows, labels, trained, rows[len(generations) - 1]["top1"])  # the last generation's
        results["born_again"] = {"generations": b.generations, "alpha": b.alpha, "temperature": b.temperature,
                                 "teacher": b.teacher}
        return results
