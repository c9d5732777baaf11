"""Write a backbone so that plain timm can load it: safetensors with timm's names + a ``config.json`` in
timm's own hub layout (``architecture``, ``model_args``, and a ``pretrained_cfg`` with the input size,
mean, std, interpolation and crop of the evaluation view); optionally an ONNX graph of the same backbone.

Loading the export in any process::

    model = timm.create_model("local-dir:DIR", pretrained=True)
    data_cfg = timm.data.resolve_data_config(model=model)   # the run's size, channels, mean and std

The same JSON also keeps dinolite's own fields (``timm_model``, ``timm_kwargs``, ``dinolite_config``), so
``dinolite.load_backbone`` reads exports of either layout.

An export directory is never overwritten with different content: writing the same export again
is a no-op, anything else is refused.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from .config import as_dict
from .errors import UserError
from .files import write_bytes, write_text
from .weights import EXPORT_JSON, EXPORT_WEIGHTS, BackboneSpec

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pretrained_cfg(spec: BackboneSpec) -> dict:
    """timm's preprocessing description of the backbone: the run's evaluation view when known
    (its size, crop fraction and normalisation), else ImageNet's at the model's size."""
    channels = int(spec.kwargs.get("in_chans", 3))
    if spec.config is not None:
        e, a = spec.config.eval, spec.config.augment
        size, crop, mean, std = e.image_size, e.crop_ratio, list(a.mean), list(a.std)
    else:
        img = spec.kwargs.get("img_size", 224)
        size, crop = int(img[0] if isinstance(img, (list, tuple)) else img), 0.875
        mean, std = IMAGENET_MEAN[:channels], IMAGENET_STD[:channels]
    if len(mean) == 1 and channels == 3:
        mean, std = mean * 3, std * 3
    return {"input_size": [channels, size, size], "mean": mean, "std": std, "crop_pct": crop, "crop_mode": "center",
            # dinolite's evaluation view resizes with roi_align (bilinear, area-averaged when shrinking)
            "interpolation": "bilinear", "num_classes": 0, "fixed_input_size": False}


def export_info(spec: BackboneSpec) -> dict:
    """The JSON written beside the weights: timm's hub layout, plus dinolite's fields and the run's settings."""
    info = {
        "architecture": spec.arch,
        "num_classes": 0,
        "model_args": {k: v for k, v in spec.kwargs.items() if k != "num_classes"},
        "pretrained_cfg": pretrained_cfg(spec),
        "timm_model": spec.arch,
        "timm_kwargs": spec.kwargs,
        "file": EXPORT_WEIGHTS,
        "source": str(spec.source),
        "source_kind": spec.kind,
        "format": "dinolite-export-1",
    }
    if spec.config is not None:
        cfg = as_dict(spec.config)
        info["dinolite_config"] = {k: cfg[k] for k in ("model", "data", "augment", "eval")}
        info["mean"], info["std"] = cfg["augment"]["mean"], cfg["augment"]["std"]
    return info


def write_safetensors(state: dict, path: Path, metadata: dict | None = None) -> None:
    """Contiguous CPU tensors, written to a temporary name and renamed (never a partial file)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_bytes(path, save(tensors, metadata=metadata))


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
    write_text(out / EXPORT_JSON, info_text)
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
