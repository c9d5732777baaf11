"""Continue pretraining (``model.init=PATH``): the student, teacher, heads and centers of an earlier run.

The source is a dinolite run directory (its newest readable checkpoint), a dinolite checkpoint file, or a
full checkpoint in the reference DINO layout (the dict ``main_dino.py`` saves: ``student`` with DDP's
``module.`` prefix, ``teacher``, both with ``backbone.`` / ``head.`` keys and the head's last layer as
``weight_g`` / ``weight_v``, ``dino_loss`` with its ``center``, ``optimizer``, ``epoch``, ``args``). Only
the weights and the centers are taken: the optimizer, the step and the schedules start afresh in the new
run directory. The file is read without running pickled code (``weights.read_weights_file``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..engine import checkpoint as ckpt
from ..errors import UserError
from ..statedict import is_tensor_dict, key_problems
from ..weights import bare_name, read_weights_file
from .dino import DINOMethod

# The reference code's weight-norm names (torch.nn.utils.weight_norm) and dinolite's (parametrizations).
_WEIGHT_NORM = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
                "last_layer.weight_v": "last_layer.parametrizations.weight.original1"}
# Parts a source may lack, which then start as a fresh run's: iBOT's mask token and separate patch head
# (a DINO-only source continued with iBOT on).
_OPTIONAL = ("mask_token", "patch_head.")


@dataclass
class InitWeights:
    """What a continued run takes from its source."""

    student: dict[str, Tensor]
    teacher: dict[str, Tensor]
    centers: dict[str, Tensor]  # "loss" (DINO's center) and, when present, "ibot_loss"
    source: Path
    kind: str  # "dinolite" or "dino-reference"
    started_fresh: list[str] = field(default_factory=list)  # parts the source lacked (filled by apply)


def _dinolite_names(state: dict) -> dict[str, Tensor]:
    """A model's state dict under dinolite's names: wrapper prefixes dropped, old-style weight norm renamed."""
    out = {}
    for key, value in state.items():
        key = bare_name(key).replace("backbone._orig_mod.", "backbone.")
        for old, new in _WEIGHT_NORM.items():
            if key.endswith(old):
                key = key[:-len(old)] + new
        out[key] = value
    return out


def _tensors(obj, what: str, path: Path) -> dict[str, Tensor]:
    if not is_tensor_dict(obj):
        raise UserError(f"{path}: its '{what}' entry is not a dict of tensors, so it is not a dinolite or DINO "
                        f"training checkpoint; pass a run directory or a full checkpoint (with student and teacher)")
    return obj


def read_init(path: str | Path) -> InitWeights:
    """The student, teacher and centers stored at ``path`` (see the module's docstring)."""
    path = Path(path)
    if path.is_dir():
        if not ckpt.list_checkpoints(path):
            raise UserError(f"model.init={path} holds no checkpoint: pass a dinolite run directory with "
                            f"checkpoints, or a checkpoint file")
        newest, obj = ckpt.latest_valid(path)
        if newest is None or obj is None:
            raise UserError(f"model.init={path}: none of its checkpoints can be read; pass a checkpoint file")
        path = newest
    elif not path.exists():
        raise UserError(f"model.init={path} not found: pass a dinolite run directory or a checkpoint file")
    else:
        obj, _ = read_weights_file(path)
    if not isinstance(obj, dict) or "student" not in obj or "teacher" not in obj:
        held = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"model.init={path} is not a full training checkpoint (it holds {held}, not student and "
                        f"teacher): continuing needs the heads too; a backbone alone can be fine-tuned or "
                        f"distilled instead")
    if "config" in obj:  # a dinolite checkpoint
        centers = {name: _tensors(obj[name], name, path)["center"] for name in ("loss", "ibot_loss") if name in obj}
        kind = "dinolite"
    else:
        loss = _tensors(obj.get("dino_loss"), "dino_loss", path)
        if "center" not in loss:
            raise UserError(f"model.init={path}: its dino_loss holds no center ({sorted(loss)}); pass a checkpoint "
                            f"saved by DINO's main_dino.py or by dinolite")
        centers, kind = {"loss": loss["center"]}, "dino-reference"
    return InitWeights(_dinolite_names(_tensors(obj["student"], "student", path)),
                       _dinolite_names(_tensors(obj["teacher"], "teacher", path)), centers, path, kind)


def _fit(name: str, own: dict[str, Tensor], given: dict[str, Tensor], init: InitWeights) -> dict[str, Tensor]:
    """``given`` checked against the model's own state: one line naming every key that does not fit."""
    problems = key_problems(own, given, _OPTIONAL)
    if problems:
        raise UserError(f"model.init={init.source}: its {name} does not fit this config's model ({problems}); "
                        f"set the model.* keys to the checkpoint's architecture and head")
    fresh = [k for k in own if k not in given and k.startswith(_OPTIONAL)]
    init.started_fresh += [f"{name}.{k}" for k in fresh]
    return {**own, **given}


def apply_init(method: DINOMethod, init: InitWeights) -> str:
    """Load ``init`` into ``method`` (everything checked before anything is loaded); returns a line for the log."""
    student = _fit("student", method.student_module.state_dict(), init.student, init)
    teacher = _fit("teacher", method.teacher.state_dict(), init.teacher, init)
    losses = {"loss": method.dino_loss, "ibot_loss": method.ibot_loss}
    centers = {}
    for name, center in init.centers.items():
        loss = losses.get(name)
        if loss is None:
            continue  # an iBOT center, and iBOT is off in this run
        if center.shape != loss.center.shape:
            raise UserError(f"model.init={init.source}: its {name} center has shape {tuple(center.shape)}, this "
                            f"config's {tuple(loss.center.shape)}: set model.out_dim to the checkpoint's")
        centers[name] = center
    if method.ibot_loss is not None and "ibot_loss" not in init.centers:
        init.started_fresh.append("the iBOT center")
    with torch.no_grad():
        method.student_module.load_state_dict(student)
        method.teacher.load_state_dict(teacher)
        for name, center in centers.items():
            losses[name].center.copy_(center)  # type: ignore[union-attr]
    fresh = f"; started fresh: {', '.join(init.started_fresh)}" if init.started_fresh else ""
    taken = ", ".join(["student", "teacher", *[f"{n} center" for n in centers]])
    return f"continuing from {init.source} ({init.kind}): {taken} loaded; optimizer, step and schedules new{fresh}"
