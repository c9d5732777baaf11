"""``finetune``: one fine-tuning run of the chosen method, from the config to the results tables.

Every model of every method gets the same budget: ``optim.epochs`` epochs of the same loader, i.e. the
same number of optimisation steps. How many models a method trains, and where, is the method's (``run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...distributed import DistInfo
from ...engine.lock import run_lock
from ...engine.rundir import RunDir, open_run_dir
from ...engine.runtime import run_threads, start
from ..config import FinetuneConfig
from ..data import build_data
from ..model import normalisation, resolve_init
from ..tables import markdown, write_tables
from ..trainer import FinetuneTrainer
from .context import Context
from .registry import METHODS

# A resume may not change these (the views, the data), nor any method's ``fixed_on_resume`` keys (the models'
# shapes), and needs train.resume_schedule_change=true for SCHEDULE (the schedule's length); see engine/rundir.py.
FIXED_ON_RESUME = ("data.source", "data.root", "data.train_dir", "augment.image_size")
SCHEDULE = ("optim.epochs", "optim.batch_size")


def prepare_finetune_dir(cfg: FinetuneConfig, is_main: bool) -> RunDir:
    """Create the run directory, refuse one of another recipe, method or init (or a resume that changes the
    models or the data), save the resolved config."""
    fixed = FIXED_ON_RESUME + tuple(key for method in METHODS.values() for key in method.fixed_on_resume)
    return open_run_dir(cfg, is_main, identity=("recipe", "method", "init"), fixed=fixed, schedule=SCHEDULE)


def finetune(cfg: FinetuneConfig, progress: bool = True, dist: DistInfo | None = None,
             setup: Callable[[FinetuneTrainer], None] | None = None) -> dict | None:
    """Run (or resume) the fine-tuning of ``cfg``; the results dict on rank 0 once finished, else None.

    ``setup`` is called with every ``FinetuneTrainer`` built (each born-again generation's too) before its
    first step: a caller's hook into the trainer (a SLURM job's preemption handler, say).
    """
    with run_threads(cfg.train.threads):  # the setting is this run's, not the calling process's
        return _finetune(cfg, progress, dist, setup)


def _finetune(cfg: FinetuneConfig, progress: bool, dist: DistInfo | None,
              setup: Callable[[FinetuneTrainer], None] | None) -> dict | None:
    t0 = time.time()
    method = METHODS[cfg.method]()
    device, dist = start(cfg.train.device, dist)
    data = build_data(cfg, dist.rank, dist.world, device.type == "cuda")
    init = resolve_init(cfg, data.channels)
    mean, std = normalisation(cfg, init, data.channels)
    ctx = Context(cfg, data, init, mean, std, cfg.augment.image_size or init.img_size, dist, device,
                  progress and dist.is_main, exits=method.exit_blocks(cfg, init.depth), hint=method.hint(cfg),
                  setup=setup)
    with run_lock(cfg.train.output_dir, take=dist.is_main):  # one process owns the run directory
        run = prepare_finetune_dir(cfg, dist.is_main)  # only a config that passed every check is saved
        ctx.schedule_changes, run_dir = run.schedule_changes, run.path
        results = method.run(ctx, run_dir)
    if results is not None and dist.is_main:
        md, _ = write_tables(run_dir, results)
        print(markdown(results), flush=True)
        print(f"finished in {time.time() - t0:.0f} s; tables in {md} and {md.with_suffix('.json')}", flush=True)
    return results
