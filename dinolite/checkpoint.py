"""Atomic checkpoints, newest-valid lookup and safe (``weights_only``) loading."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

PATTERN = re.compile(r"^checkpoint-(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step:08d}.pt"


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file under
    the final name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(state: dict, run_dir: Path, step: int, keep: int = 2) -> Path:
    """Save ``state`` as ``checkpoint-<step>.pt`` and prune all but the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    atomic_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run directory, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if PATTERN.match(p.name))


def load(path: Path, map_location="cpu") -> dict:
    """Load tensors and plain containers only: no pickled code can run."""
    return torch.load(path, map_location=map_location, weights_only=True)


def latest_valid(run_dir: Path) -> tuple[Path, dict] | tuple[None, None]:
    """The newest checkpoint that loads; unreadable ones are reported and passed over."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except Exception as err:  # a truncated or corrupt file: fall back to the previous one
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(err).__name__}: {err}", stacklevel=2)
    return None, None
