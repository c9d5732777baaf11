"""What a pretraining or distillation run prints at its start and its end (the figures come from the run)."""

from __future__ import annotations

from pathlib import Path

from ..schema import Config
from .baddata import BAD_SAMPLES


def start_lines(cfg: Config, baselines: dict[str, float], total: int, steps_per_epoch: int, images: int,
                where: str, students: list[str]) -> list[str]:
    """The start banner: what is distilled into what (``students``), the run's length, where it runs and from
    which state (``where``), and the baselines of a fresh run."""
    online = " (random init)" if "knn_online_random_init" in baselines else ""
    known = [f"{k} {v:.2f} %{online if k == 'knn_online_random_init' else ''}" for k, v in baselines.items()
             if k.startswith("knn")]
    lines = [f"distilling {cfg.distill.teacher} ({cfg.distill.objective} objective) into {', '.join(students)}"] \
        if students else []
    spe = steps_per_epoch
    lines.append(f"training {total} steps of {cfg.optim.batch_size} images ({total / spe:.2f} epochs of {images}, "
                 f"{spe} steps per epoch) on {where}" + (f"; baselines: {', '.join(known)}" if known else ""))
    return lines


def end_line(cfg: Config, done: bool, step: int, total: int, seconds: float, skipped: int, run_dir: Path) -> str:
    """The last line: finished or stopped, at which step, in how long, the bad samples skipped."""
    listed = f" (listed in {Path(run_dir) / BAD_SAMPLES})" if cfg.data.source == "folder" and skipped else ""
    bad = f"{skipped} bad samples skipped{listed}; " if cfg.data.source in ("shards", "folder") else ""
    return (f"{'finished' if done else 'stopped'} at step {step}/{total} in {seconds:.0f} s; {bad}"
            f"run directory {run_dir}")
