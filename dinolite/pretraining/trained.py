"""The backbones a run trained, handed over at its end: DINO's teacher as ``teacher_backbone.safetensors``
(timm's parameter names, the model in its metadata); each distilled student as an export folder
``students/<name>/`` that timm loads (``timm.create_model("local-dir:...")``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

from ..export import export_backbone, write_safetensors
from ..maths.models import backbone_kwargs
from ..schema import Config
from ..weights import BackboneSpec


def export_trained(evaluated: Iterable, channels: int, cfg: Config, run_dir: Path) -> list[Path]:
    """Each of ``evaluated`` (``eval.evaluated.Evaluated``: name, backbone, model config) written under
    ``run_dir``; returns the paths written."""
    out: list[Path] = []
    for ev in evaluated:
        kwargs = backbone_kwargs(ev.model, channels, cfg.augment.global_crops_size, 0.0)
        if ev.name == "teacher":
            path = run_dir / "teacher_backbone.safetensors"
            meta = {"arch": ev.model.arch, "timm_kwargs": OmegaConf.to_yaml(OmegaConf.create(kwargs))}
            write_safetensors(ev.backbone.state_dict(), path, meta)
            out.append(path)
        else:
            spec = BackboneSpec(ev.model.arch, kwargs, ev.backbone.state_dict(), run_dir / "config.yaml",
                                "dinolite-distill", cfg)
            out.append(export_backbone(spec, run_dir / "students" / ev.name, replace=True))
    return out
