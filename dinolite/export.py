"""Write a backbone so that plain timm can load it: safetensors with timm's names + a JSON of the
model name and ``create_model`` kwargs; optionally an ONNX graph of the same backbone.

Loading the export in any process::

    info = json.load(open("DIR/config.json"))
    model = timm.create_model(info["timm_model"], pretrained=True,
                              pretrained_cfg_overlay=dict(file="DIR/model.safetensors"), **info["timm_kwargs"])

An export directory is never overwritten with different content: writing the same export again
is a no-op, anything else is refused.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from .errors import UserError
from .weights import EXPORT_JSON, EXPORT_WEIGHTS, BackboneSpec


def export_info(spec: BackboneSpec) -> dict:
    """The JSON written beside the weights: what timm needs, plus the run's data/eval settings."""
    info = {
        "timm_model": spec.arch,
        "timm_kwargs": spec.kwargs,
        "file": EXPORT_WEIGHTS,
        "source": str(spec.source),
        "source_kind": spec.kind,
        "format": "dinolite-export-1",
    }
    if spec.config is not None:
        cfg = OmegaConf.to_container(OmegaConf.structured(spec.config))
        info["dinolite_config"] = {k: cfg[k] for k in ("model", "data", "augment", "eval")}
        info["mean"], info["std"] = cfg["augment"]["mean"], cfg["augment"]["std"]
    return info


def write_safetensors(state: dict, path: Path, metadata: dict | None = None) -> None:
    """Contiguous CPU tensors, written to a temporary name and renamed (never a partial file)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _same_export(out: Path, info_text: str, state: dict) -> bool:
    """True when ``out`` already holds exactly this export (same JSON, same tensors)."""
    from safetensors.torch import load_file

    names = {p.name for p in out.iterdir()}
    if not {EXPORT_JSON, EXPORT_WEIGHTS} <= names or (out / EXPORT_JSON).read_text() != info_text:
        return False
    try:
        old = load_file(str(out / EXPORT_WEIGHTS))
    except Exception:  # noqa: BLE001 - an unreadable file is simply "different"
        return False
    return old.keys() == state.keys() and all(torch.equal(old[k], state[k].cpu()) for k in state)


def export_backbone(spec: BackboneSpec, out: str | Path) -> Path:
    """Write ``out/model.safetensors`` and ``out/config.json``; refuse a folder with other content."""
    out = Path(out)
    info_text = json.dumps(export_info(spec), indent=2, sort_keys=True) + "\n"
    state = {k: v.detach().contiguous().cpu() for k, v in spec.state_dict.items()}
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file: pass a folder")
        if any(out.iterdir()):
            if _same_export(out, info_text, state):
                return out
            raise UserError(f"{out} already holds different files: pass a new or empty folder "
                            f"(nothing is overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, out / EXPORT_WEIGHTS, {"timm_model": spec.arch})
    (out / EXPORT_JSON).write_text(info_text)
    return out


def export_onnx(model: nn.Module, path: Path, in_chans: int, img_size: int) -> Path:
    """The backbone as ONNX (opset 17, dynamic batch, fixed image size), via the TorchScript exporter."""
    model = model.eval()
    x = torch.randn(2, in_chans, img_size, img_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on timm's shape checks; the size is fixed
            torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                              dynamo=False)
    except ImportError as err:
        raise UserError(f"ONNX export needs the onnx package ({err}): pip install onnx onnxruntime") from None
    return path
