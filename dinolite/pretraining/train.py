"""Pretraining as a task of the run engine: builds the parts, wires one step together, evaluates. The maths
lives elsewhere; the loop, checkpoints and the run directory are the engine's (``dinolite/engine/``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import Config, as_dict
from ..data import build_loader, build_source
from ..distributed import DistInfo, check_shared_dir, cleanup
from ..engine.allocator import keep_blocks
from ..engine.checkpoint import list_checkpoints
from ..engine.loop import StepOut, resume_task, start_engine
from ..engine.rundir import check_run_dir, create_run_dir
from ..engine.runtime import per_rank_batch, run_threads, start
from ..errors import UserError
from ..eval.pretraining import RunEvaluation, knn_line
from ..maths.schedules import Plan
from ..methods.distill import DistillMethod
from ..methods.factory import build_method
from ..reuse import adopt_source
from .baddata import BAD_SAMPLES, check_bad_fraction, check_channels, short_epoch
from .budget import BudgetKeeper
from .budgeted import BudgetedTask
from .lines import end_line, start_lines
from .monitor import CollapseMonitor, feed, monitors_for
from .plan import RunPlan, resumed_budget_plan
from .rundir import FIXED_ON_RESUME, schedule_keys
from .trained import export_trained


class Pretrainer(BudgetedTask):
    """One pretraining run as a task of the run engine (``engine.loop``): the data, the method (DINO, or distillation
    when ``distill.teacher`` is set; it owns the models and the step), the time budget, the evaluation."""

    @property
    def nan_advice(self) -> str:
        """The NaN stop's advice; under bf16 autocast on a CPU, float32 first (CPU bf16 kernels have returned NaN)."""
        advice = "lower optim.lr or raise loss.warmup_teacher_temp_epochs and resume"
        if self.method.precision == "bf16" and self.device.type == "cpu":
            return f"it ran in bf16 autocast on a CPU: resume with train.precision=fp32, or {advice}"
        return advice

    def __init__(self, cfg: Config, dist_info: DistInfo | None = None, progress: bool = True):
        self.cfg = cfg  # cfg.train.threads is applied by pretrain(), which gives the caller's setting back
        self.device, self.dist = start(cfg.train.device, dist_info)
        self.global_batch = cfg.optim.batch_size
        self.batch = per_rank_batch(self.global_batch, self.dist.world)
        self.progress = progress and self.dist.is_main
        # The run directory's checks first, then the parts; nothing is written until all were read without error.
        resumed_plan = resumed_budget_plan(cfg)  # a budget run resumes on the step count it fixed (plan.json)
        adopt_source(cfg)  # a backbone-only model.init gives the architecture (before the run directory's checks)
        accepted = check_run_dir(cfg, fixed=FIXED_ON_RESUME, schedule=schedule_keys(cfg))
        self.source = build_source(cfg.data, "train")
        check_channels(cfg, self.source.channels)
        if len(self.source) < self.global_batch:
            raise UserError(f"{len(self.source)} training images are fewer than one global batch "
                            f"({self.global_batch}): lower optim.batch_size")
        # A new run continuing an earlier one takes its weights and centers, checked before anything is written.
        fresh = not list_checkpoints(Path(cfg.train.output_dir))
        self.method, self._init_line = build_method(cfg, self.source.channels, self.device, self.dist, init=fresh)
        self.run = create_run_dir(cfg, self.dist.is_main, accepted)
        self.run_dir = self.run.path
        check_shared_dir(self.run_dir, self.dist, self.device)
        if hasattr(self.source, "bad_log"):  # image folders list their undecodable files here
            self.source.bad_log = self.run_dir / BAD_SAMPLES
        self.loader = build_loader(self.source, self.batch, cfg.train.seed, cfg.data.num_workers,
                                   self.dist.rank, self.dist.world, pin_memory=self.device.type == "cuda")
        # the run's length: the recipe's, or the one a resumed budget run fixed; a new budget run's in plan_budget
        self.run_plan = RunPlan(cfg, self.loader.steps_per_epoch)
        if resumed_plan is not None:
            self.run_plan.set(*resumed_plan)
        if self.dist.is_main:
            self.run_plan.save(self.run_dir)
        self.step = 0
        self.engine = start_engine(self.run_dir, self.dist, self.device, cfg, self.progress, "pretrain",
                                   self.global_batch)
        self.metrics = self.engine.metrics
        self.evaluation = RunEvaluation(cfg, self.source, self.device, self.dist, self.progress, self.run_dir)
        self.online = self.evaluation.online_knn()
        self.baselines: dict[str, float] = {}
        self.skipped = 0
        self.keeper: BudgetKeeper | None = None  # set by plan_budget: the time budget kept over the run
        # set by fit(): where this fit started and stops, one monitor per backbone
        self._first_step = self._stop = 0
        self._monitors: dict[str, CollapseMonitor] = {}
        self._resume()

    def state(self) -> dict:
        """Everything a resume needs; the same on every rank, so it resumes on any world size."""
        return {**self.method.state(), "step": self.step, "config": as_dict(self.cfg), "world": self.dist.world}

    def load_state(self, state: dict, path: Path) -> None:
        try:
            self.method.load_state(state)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        self.saved_world = int(state["world"])

    def _resume(self) -> None:
        def saved_by() -> str:
            world = self.saved_world
            return f" (saved by {world} processes, resumed on {self.dist.world})" if world != self.dist.world else ""

        if resume_task(self.engine, self, self.run.schedule_changes, saved_by) is None and self._init_line \
                and self.dist.is_main:
            print(self._init_line, flush=True)

    @property
    def plan(self) -> Plan:
        """The run's length and warm-up / freeze spans in steps; ``runplan.RunPlan`` owns it."""
        return self.run_plan.plan

    @property
    def total_steps(self) -> int:
        return self.plan.total

    def short_epoch(self, epoch: int) -> None:
        """The loader ended the epoch early (``baddata.short_epoch``): one process goes on from the next epoch."""
        missing, warning = short_epoch(self.cfg.data.root, epoch, self.steps_per_epoch, self.step, self.dist)
        tqdm.write(f"warning: {warning}")
        self.step = (epoch + 1) * self.steps_per_epoch
        self.metrics.write({"step": self.step, "epoch": epoch + 1, "short_epoch_steps": missing,
                            "skipped_samples": self.loader.skipped_samples(), "warnings": [warning]})

    @property
    def steps_per_epoch(self) -> int:
        return self.loader.steps_per_epoch

    def batches(self, epoch: int, start: int):
        return self.loader.epoch(epoch, start)

    def run_step(self, batch: tuple) -> StepOut:
        self._sched = sched = self.method.schedule(self.step, self.plan)
        loss, terms = self.method.train_step(self.method.make_crops(batch[0], batch[1], self.step), sched)
        return StepOut(loss, terms)

    def log_figures(self) -> dict[str, torch.Tensor]:
        # bad images so far, in the mean: every rank sees the same figure and decides alike
        bad = torch.tensor(float(self.loader.skipped_samples()), device=self.device)
        figures = {**self.method.log_figures(), "skipped_samples": bad}
        if self.keeper is not None:  # each rank's clock, averaged: the ranks re-plan on the same figure
            figures["budget_left_s"] = torch.tensor(self.keeper.left_s(), device=self.device)
        return figures

    def at_log(self, record: dict) -> dict[str, str]:
        sched = self._sched
        record.update(lr=sched.lr, wd=sched.wd, momentum=sched.momentum, teacher_temp=sched.teacher_temp)
        record["skipped_samples"] = skipped = round(record["skipped_samples"])
        check_bad_fraction(self.cfg.data, self.run_dir, skipped, (self.step - self._first_step) * self.global_batch)
        postfix: dict[str, str] = {}
        if "teacher_entropy" in record:  # DINO's teacher: its collapse statistics, means over the log interval
            postfix["H"] = f"{record['teacher_entropy']:.2f}"
        every = self.cfg.eval.online_every
        if self.online is not None and (self.step % every == 0 or self.step == self._stop):
            # Every rank scores the same subset with the same backbones: no collective needed.
            for ev in self.method.evaluated():
                record[f"knn_online{ev.suffix}"] = knn = self.online(ev.backbone)
                postfix[f"knn{ev.suffix}"] = f"{knn:.1f}"
        for warning in feed(self._monitors, record, self.baselines):
            record.setdefault("warnings", []).append(warning)
            tqdm.write(f"warning: {warning}")
        return postfix

    def replan(self, record: dict, stop: int) -> int:
        """Keep the time budget (``budget.BudgetKeeper``): when the steps left no longer fit in what is left of it
        at the recent step time, end the plan earlier (or later, when a slow stretch has passed or the steps run
        faster than timed at the start); the schedules end with the new plan, which is recorded in plan.json and
        the metrics so a resume continues it."""
        left = record.pop("budget_left_s", None)
        if left is None or self.keeper is None:
            return stop
        self.keeper.observe(self.step, record["step_seconds"], self._first_step)
        total = self.plan.total
        new, why = self.keeper.replan(self.step, total, left)
        if why is None:
            return stop
        record["replan"] = why
        # every span (warm-up, freeze) re-resolved on the new plan; train.stop_after_steps still stops earlier
        plan = self.run_plan.set(new)
        self._stop = min(new, self.cfg.train.stop_after_steps or new)
        for monitor in self._monitors.values():
            monitor.warmup = plan.warmup
        if self.dist.is_main:
            self.run_plan.save(self.run_dir)
            tqdm.write(self.keeper.replan_line(self.step, why))
        return self._stop

    def after_epoch(self) -> None:
        """Nothing to do between epochs (the engine's hook)."""

    def fit(self) -> None:
        """Train to the end of the plan (or ``train.stop_after_steps``); the trained backbones are exported."""
        cfg, plan = self.cfg, self.plan
        self._first_step = self.step
        self._stop = min(plan.total, cfg.train.stop_after_steps or plan.total)
        self._monitors = monitors_for([ev.suffix for ev in self.method.evaluated()], cfg.model.out_dim,
                                      cfg.train.collapse_patience, plan.warmup,
                                      self.online.queries if self.online is not None else 0, cfg.loss.centering)
        self.engine.run(self, self._stop)
        self.skipped = self.loader.skipped_samples()  # bad samples (shards); with several ranks every rank calls it
        if self.dist.is_main and self.step >= self.total_steps:
            self.export()

    def export(self) -> list[Path]:
        """The trained backbones on their own, for timm (``trained.export_trained``)."""
        return export_trained(self.method.evaluated(), self.source.channels, self.cfg, self.run_dir)

    def compute_baselines(self) -> dict[str, float]:
        """The random-init and raw-pixel figures the run is measured against (kept in baselines.json)."""
        reference = {}
        if isinstance(self.method, DistillMethod):  # the students' k-NN is read beside their teacher's
            reference["teacher"] = self.method.teacher.backbone
        self.baselines = self.evaluation.baselines(self.online, self.method.evaluated(), reference)
        return self.baselines

    def evaluate(self) -> dict[str, float]:
        """Each trained backbone's k-NN under the final protocol, beside the baselines."""
        results = {f"knn_top1{ev.suffix}": self.evaluation.knn(ev.backbone, ev.name)["top1"]
                   for ev in self.method.evaluated()}
        results.update({k: v for k, v in self.baselines.items() if k.startswith("knn_top1_")})
        self.metrics.write({"step": self.step, **results})
        return results


def pretrain(cfg: Config, progress: bool = True, setup: Callable[[Pretrainer], None] | None = None,
             started: float | None = None) -> dict[str, float]:
    """Train (or resume) the run of ``cfg`` and return its final k-NN figures (empty if skipped).

    ``setup`` sees the built trainer before the first step (the SLURM launcher hooks its
    preemption check in there). ``started`` (default: now) is when ``train.budget_minutes`` began
    to count. The process group, if any, is left when this returns or raises.
    """
    from ..distributed import read_rendezvous
    from ..engine.lock import run_lock

    keep_blocks()  # glibc keeps the step's blocks (engine/allocator.py): no page faults per block per step
    with run_threads(cfg.train.threads), run_lock(cfg.train.output_dir, take=read_rendezvous().rank == 0):
        try:
            return _pretrain(cfg, progress, setup, started or time.time())
        finally:
            cleanup()


def _pretrain(cfg: Config, progress: bool, setup: Callable[[Pretrainer], None] | None,
              t0: float) -> dict[str, float]:
    trainer = Pretrainer(cfg, progress=progress)
    if setup is not None:
        setup(trainer)
    fresh = trainer.step == 0
    baselines = trainer.compute_baselines()
    timed = trainer.time_and_plan(t0, baselines)
    if trainer.dist.is_main:  # the start banner: what runs where, and from which state
        for line in timed:
            print(line, flush=True)
        students = [ev.name for ev in trainer.method.evaluated()] if isinstance(trainer.method, DistillMethod) else []
        start = "from step 0" if fresh else f"resumed at step {trainer.step} from {trainer.engine.last_good}"
        where = f"{trainer.device.type} x {trainer.dist.world} in {trainer.run_dir}, {start}"
        for line in start_lines(cfg, baselines if fresh else {}, trainer.total_steps, trainer.steps_per_epoch,
                                len(trainer.source), where, students):
            print(line, flush=True)
    trainer.fit()
    results: dict[str, float] = {}
    done = trainer.step >= trainer.total_steps
    if done and cfg.eval.knn_at_end:
        results = trainer.evaluate()  # every rank: the feature extraction is split over them
        results = results if trainer.dist.is_main else {}
    if trainer.dist.is_main and results:
        print(knn_line(cfg, results, trainer.method.evaluated()), flush=True)
    if trainer.dist.is_main:
        print(end_line(cfg, done, trainer.step, trainer.total_steps, time.time() - t0, trainer.skipped,
                       trainer.run_dir), flush=True)
    trainer.metrics.close()  # TensorBoard / W&B: the run's records are all written
    return results
