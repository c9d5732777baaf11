"""The run directory of a pretraining or distillation run: what a resume may not change, and what it may change
only when asked (the schedules' length); checked before anything is written (engine/rundir.py)."""

from __future__ import annotations

from ..engine.rundir import RunDir, open_run_dir
from ..schema import Config
from .plan import old_budget_plan, resumed_budget_plan

# A resume may not change these (the checkpoints' shapes, the crops, the data), and needs
# train.resume_schedule_change=true for those (the schedules' length); see engine/rundir.py.
FIXED_ON_RESUME = ("model.arch", "model.patch_size", "model.embed_dim", "model.depth", "model.num_heads",
                   "model.reg_tokens", "model.mlp_ratio", "model.init_values", "model.no_embed_class", "model.out_dim",
                   "model.hidden_dim", "model.bottleneck_dim", "model.head_layers",
                   "model.norm_last_layer", "augment.global_crops_size", "augment.local_crops_size",
                   "augment.local_crops_number", "data.source", "data.root", "data.train_dir",
                   "loss.ibot_separate_head", "model.init", "distill.teacher", "distill.teacher_arch",
                   "distill.objective", "distill.students")
SCHEDULE = ("optim.epochs", "optim.total_steps", "optim.batch_size")


def prepare_run_dir(cfg: Config, is_main: bool) -> RunDir:
    """The run directory of a pretraining run, checked against the run it holds (see engine/rundir.py)."""
    resumed_budget_plan(cfg)  # a resume with another time budget is refused here too
    return open_run_dir(cfg, is_main, fixed=FIXED_ON_RESUME, schedule=schedule_keys(cfg))


def schedule_keys(cfg: Config) -> tuple[str, ...]:
    """SCHEDULE, less optim.total_steps when ``cfg`` resumes with the same budget (and no step count) a budget run
    made before plan.json: its saved optim.total_steps is the budget's plan, not a length the user typed."""
    old = old_budget_plan(cfg)
    if old is None or cfg.optim.total_steps or old["budget_minutes"] != cfg.train.budget_minutes:
        return SCHEDULE
    return tuple(key for key in SCHEDULE if key != "optim.total_steps")
