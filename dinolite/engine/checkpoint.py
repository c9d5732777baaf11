"""Atomic checkpoints, newest-valid lookup and safe (``weights_only``) loading."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ..files import atomic_write

PATTERN = re.compile(r"^checkpoint-(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step:08d}.pt"


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through :func:`~dinolite.files.atomic_write`: the old file or the new one, never half."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(state: dict, run_dir: Path, step: int, keep: int = 2) -> Path:
    """Save ``state`` as ``checkpoint-<step>.pt`` and keep it plus the newest ``keep - 1`` others.

    The file just written is never pruned, whatever the names of the others (unreadable newer files
    are moved aside by :func:`latest_valid` when a run resumes, so they do not count).
    """
    path = checkpoint_path(run_dir, step)
    atomic_save(state, path)
    others = [p for p in list_checkpoints(run_dir) if p != path]
    for old in others[:max(0, len(others) - (keep - 1))]:
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


UNREADABLE = ".unreadable"


def latest_valid(run_dir: Path, move_aside: bool = False) -> tuple[Path, dict] | tuple[None, None]:
    """The newest checkpoint that loads. With ``move_aside`` (the training's main process), newer ones
    that do not load are renamed ``checkpoint-N.pt.unreadable`` (with a warning) once a readable one is
    found, so the run's retention never counts them; when none loads, nothing is moved and
    ``(None, None)`` comes back. Readers (evaluation commands) leave the directory as it is."""
    bad = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = load(path)
        except Exception as err:  # noqa: BLE001 - a truncated or corrupt file: fall back to the previous one
            warnings.warn(f"unreadable checkpoint {path}: {type(err).__name__}: {str(err)[:200]}", stacklevel=2)
            bad.append(path)
            continue
        for p in bad if move_aside else []:
            p.rename(p.with_name(p.name + UNREADABLE))
            warnings.warn(f"moved the unreadable {p.name} aside as {p.name + UNREADABLE}", stacklevel=2)
        return path, state
    return None, None


def refuse_unreadable(run_dir: Path) -> None:
    """A run directory whose checkpoints all fail to load is not restarted at step 0 behind the user's back."""
    from ..errors import UserError

    found = list_checkpoints(run_dir)
    if found:
        raise UserError(f"none of the {len(found)} checkpoints in {run_dir} can be read (newest {found[-1].name}): "
                        f"to start over, pass a new train.output_dir or delete them; to keep the run, restore one")
