"""The method a config asks for, built above the methods (DINO, distillation, the warm starts) so that none of
them imports the factory that imports them."""

from __future__ import annotations

import torch

from ..config import Config
from ..distributed import DistInfo
from ..maths.models import DINOModel
from ..reuse import adopt_source, apply_backbone, cached_backbone
from .base import Method
from .dino import DINOMethod
from .distill import DistillMethod
from .warmstart import apply_init, read_init


def build_method(cfg: Config, in_chans: int, device: torch.device | str = "cpu", dist: DistInfo | None = None,
                 models: tuple[DINOModel, DINOModel] | None = None, init: bool = True) -> tuple[Method, str]:
    """The method a config asks for: distillation when ``distill.teacher`` is set, else DINO, continued from
    ``model.init`` when ``init`` (a new run). Returns it and the line saying where it continues from ("" if not)."""
    adopt_source(cfg)  # a backbone-only model.init: its architecture and the head warm-up's settings
    if cfg.distill.teacher:
        if models is not None:
            raise ValueError("models= replaces DINO's student / teacher pair; a distillation recipe lists its "
                             "students in distill.students")
        return DistillMethod(cfg, in_chans, device, dist), ""
    method = DINOMethod(cfg, in_chans, device, dist, models=models)
    if not (init and cfg.model.init):
        return method, ""
    backbone = cached_backbone(cfg)
    if backbone is not None:
        return method, apply_backbone(method, backbone)
    return method, apply_init(method, read_init(cfg.model.init))
