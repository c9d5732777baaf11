"""``model.init`` from a backbone alone (no DINO / iBOT heads): the architecture is taken from the source, the
weights are fitted to the recipe's crops and channels, and the heads learn before they teach.

A released backbone continued naively (random heads, the usual LR, the teacher's first targets from a random
head) loses in its first steps what it knew (dinov2 #204: k-NN from ~80 % to ~10 %). Here, by default:

- ``model.init_head_warmup`` (0.1 of the run): the backbone is frozen, only the heads (and iBOT's mask token)
  learn, on the pretrained features;
- then ``model.init_backbone_lr`` (0.2) of the LR for the backbone, times ``model.init_layer_decay`` (0.75)
  per block below the top, as fine-tuning does;
- at the unfreeze the teacher becomes a copy of the student (``model.init_teacher_copy``: its heads have
  learned, the EMA teacher's lag behind) and the center restarts from that step's teacher outputs
  (``model.init_recenter``).

The resolved settings are written into the run's config (config.yaml), so a resume continues the same plan.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import Config
from .errors import UserError
from .layouts.source import Backbone, describe, fit_state, is_hf_or_export_dir, read_backbone
from .maths.models import VIT_ONLY
from .weights import read_weights_file

DEFAULTS = {"init_head_warmup": 0.1, "init_backbone_lr": 0.2, "init_layer_decay": 0.75}  # a backbone-only source
FULL = {"init_head_warmup": 0.0, "init_backbone_lr": 1.0, "init_layer_decay": 1.0}  # no init, or one with heads
_cache: dict[tuple, Backbone] = {}  # the last source read (the config step and the build share one read)


def _key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def read_source(init: str) -> Backbone | None:
    """The backbone at ``init`` when it is a backbone-only source; None for a run directory or a full
    training checkpoint (``warmstart`` continues those, heads and all)."""
    path = Path(init)
    if not path.exists():
        raise UserError(f"model.init={init} not found: pass a run, a checkpoint or a backbone's weights")
    key = _key(path)
    if key in _cache:
        return _cache[key]
    if path.is_dir():
        if not is_hf_or_export_dir(path):
            return None  # a run directory
        backbone = read_backbone(path)
    elif path.suffix == ".safetensors":
        backbone = read_backbone(path)
    else:
        obj, meta = read_weights_file(path)
        if isinstance(obj, dict) and ("student" in obj or "teacher" in obj):
            return None
        backbone = read_backbone(path, obj, meta)
    _cache.clear()
    _cache[key] = backbone
    return backbone


def adopt_source(cfg: Config) -> str:
    """Set ``cfg.model``'s architecture from a backbone-only ``model.init`` and resolve the head warm-up's
    settings (None -> :data:`DEFAULTS` for such a source, :data:`FULL` otherwise). Idempotent; returns a note
    for the banner ("" without a backbone-only source)."""
    m = cfg.model
    backbone = read_source(m.init) if m.init else None
    for name, value in (DEFAULTS if backbone is not None else FULL).items():
        if getattr(m, name) is None:
            setattr(m, name, value)
    if backbone is None:
        return ""
    m.arch = backbone.fields["arch"]
    for name in VIT_ONLY:
        setattr(m, name, backbone.fields.get(name))
    return f"architecture from {backbone.source}: {describe(backbone)}"


def cached_backbone(cfg: Config) -> Backbone | None:
    return read_source(cfg.model.init) if cfg.model.init else None


def apply_backbone(method, backbone: Backbone) -> str:
    """Load ``backbone`` into the student's and the teacher's backbones (heads stay as built: random, equal);
    returns the banner's line: the source, what was fitted, and what the warm-up does."""
    state, notes = fit_state(backbone, method.student_module.backbone)
    with torch.no_grad():
        method.student_module.backbone.load_state_dict(state)
        method.teacher.backbone.load_state_dict(state)
    _cache.clear()
    m = method.cfg.model
    plan = (f"heads warm up on the frozen backbone for {m.init_head_warmup:g} of the run"
            if m.init_head_warmup else "no head warm-up (model.init_head_warmup=0)")
    then = (f"then the backbone learns at {m.init_backbone_lr:g} x the LR, x {m.init_layer_decay:g} per block "
            f"below the top")
    at = [w for w, on in (("the teacher copies the student", m.init_teacher_copy),
                          ("the center restarts", m.init_recenter)) if on and m.init_head_warmup]
    fitted = f"; {'; '.join(notes)}" if notes else ""
    return (f"continuing from the backbone {backbone.source} ({backbone.kind}: {describe(backbone)}), "
            f"heads new{fitted}; {plan}, {then}" + (f"; at the unfreeze {' and '.join(at)}" if at else ""))
