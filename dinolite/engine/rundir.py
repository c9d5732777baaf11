"""The run directory: created, checked against the run it already holds, and its config saved, in that order.

A resume may not change what the checkpoints were made of (the model's shapes, the crops, the data):
such a change is refused in one line listing the keys, before anything is written, so the directory
(its config.yaml included) stays as it was. A change of the schedule's length (epochs, steps, batch)
would silently bend the cosine schedules mid-run; it needs ``train.resume_schedule_change=true`` and is
then recorded in metrics.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import as_dict, read_saved_config, save_config
from ..errors import UserError
from .checkpoint import list_checkpoints

CONFIG = "config.yaml"


@dataclass
class RunDir:
    """A prepared run directory and the schedule changes a resume accepted (key -> [saved, new])."""

    path: Path
    schedule_changes: dict[str, list] = field(default_factory=dict)


def _flat(cfg) -> dict:
    """``{"model.embed_dim": 64, ...}`` of a config dataclass."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(as_dict(cfg), "")
    return out


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in patterns)


def changed(old, new, patterns: tuple[str, ...]) -> dict[str, list]:
    """The keys under ``patterns`` whose values differ between two configs: key -> [old, new]."""
    a, b = _flat(old), _flat(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if _matches(k, patterns) and a.get(k) != b.get(k)}


def _listing(changes: dict[str, list]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_run_dir(cfg, identity: tuple[str, ...] = ("recipe",), fixed: tuple[str, ...] = (),
                  schedule: tuple[str, ...] = ()) -> dict[str, list]:
    """Refuse a ``cfg.train.output_dir`` that holds another run or a resume that changes its ``fixed`` keys
    (or, without the opt-in, its ``schedule`` keys); writes nothing. Returns the accepted schedule changes.

    ``identity`` keys name the run (another value: another run). ``fixed`` and ``schedule`` are only
    compared when the directory holds checkpoints (a run that never saved one may start afresh).
    """
    run_dir = Path(cfg.train.output_dir)
    saved = run_dir / CONFIG
    accepted: dict[str, list] = {}
    if saved.is_file():
        old = read_saved_config(saved, type(cfg))
        for key in identity:
            if getattr(old, key) != getattr(cfg, key):
                raise UserError(f"{run_dir} holds a run with {key} {getattr(old, key)!r}, not {getattr(cfg, key)!r}: "
                                f"pass train.output_dir=<new folder>, or the same {key} to resume it")
        if list_checkpoints(run_dir):
            shapes = changed(old, cfg, fixed)
            if shapes:
                raise UserError(f"{run_dir} holds checkpoints of another model or data ({_listing(shapes)}): resume "
                                f"with the values of its {CONFIG}, or pass train.output_dir=<new folder>")
            accepted = changed(old, cfg, schedule)
            if accepted and not cfg.train.resume_schedule_change:
                raise UserError(f"resuming {run_dir} with another schedule length ({_listing(accepted)}) would bend "
                                f"its schedules mid-run: pass train.resume_schedule_change=true to accept it, or "
                                f"resume with the values of its {CONFIG}")
    return accepted


def open_run_dir(cfg, is_main: bool, identity: tuple[str, ...] = ("recipe",), fixed: tuple[str, ...] = (),
                 schedule: tuple[str, ...] = ()) -> RunDir:
    """:func:`check_run_dir`, then :func:`create_run_dir`."""
    return create_run_dir(cfg, is_main, check_run_dir(cfg, identity, fixed, schedule))


def create_run_dir(cfg, is_main: bool, accepted: dict[str, list]) -> RunDir:
    """Create ``cfg.train.output_dir`` and save the resolved config (rank 0), once :func:`check_run_dir` has
    passed (``accepted``: the schedule changes it accepted)."""
    run_dir = Path(cfg.train.output_dir)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG)
    return RunDir(run_dir, accepted)
