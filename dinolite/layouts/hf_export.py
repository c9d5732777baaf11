"""``dinolite export --hf``: a timm ViT as a Hugging Face ``transformers`` model folder, checked before it is
written: ``transformers.AutoModel.from_pretrained`` loads the folder in this process and its features (the class
token of ``last_hidden_state``, after the final norm) must equal timm's. All or nothing, like every export."""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import UserError
from .hf import HF_MISSING, from_timm

TOLERANCE = 1e-5  # float32, the same operations in another order


def require_transformers() -> Any:
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise UserError(HF_MISSING) from None


def write_folder(folder: Path, config: dict, state: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def hf_features(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """The class-token features transformers computes for ``images`` from the folder (what a user would run)."""
    transformers = require_transformers()
    transformers.logging.set_verbosity_error()  # ViTModel's unused pooler is reported as newly initialised
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(pixel_values=images).last_hidden_state[:, 0]


def export_hf(vit: torch.nn.Module, in_chans: int, out: Path) -> float:
    """Write ``vit`` to the new or empty folder ``out`` as a transformers model; returns the largest difference
    of its features from timm's on random images at the model's size."""
    require_transformers()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} is not a new or empty folder: nothing is overwritten")
    config, state = from_timm(vit, in_chans)
    size = config["image_size"]
    images = torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dinolite-hf-", dir=out.parent) as tmp:
        write_folder(Path(tmp), config, state)
        with torch.no_grad():
            want = vit.eval()(images)
        got = hf_features(Path(tmp), images)
        diff = (got - want).abs().max().item()
        if not diff <= TOLERANCE * max(1.0, want.abs().max().item()):
            raise UserError(f"transformers' {config['architectures'][0]} differs from timm by {diff:.3g} on the "
                            f"same images: nothing was written")
        out.mkdir(exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            shutil.move(str(Path(tmp) / name), str(out / name))
    return diff
