"""Write a backbone so that plain timm can load it: safetensors with timm's names + a ``config.json`` in
timm's own hub layout (``architecture``, ``model_args``, and a ``pretrained_cfg`` with the input size,
mean, std, interpolation and crop of the evaluation view); optionally an ONNX graph of the same backbone.

Loading the export in any process::

    model = timm.create_model("local-dir:DIR", pretrained=True)
    data_cfg = timm.data.resolve_data_config(model=model)   # the run's size, channels, mean and std

The same JSON also keeps dinolite's own fields (``timm_model``, ``timm_kwargs``, ``dinolite_config``), so
``dinolite.load_backbone`` reads exports of either layout.

An export directory is never overwritten with different content: writing the same export again
is a no-op, anything else is refused. An export is all or nothing: the ONNX graph (any timm ViT, with
or without register tokens, any timm CNN, official DINO checkpoints) is traced and checked with
onnxruntime before the first file is written, and a failure leaves no folder behind.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .config import as_dict
from .errors import UserError
from .files import FolderTaken, atomic_write, write_bytes, write_folder, write_text
from .weights import EXPORT_JSON, EXPORT_WEIGHTS, BackboneSpec

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ONNX_FILE = "model.onnx"
ONNX_MISSING = "--onnx needs the onnx and onnxruntime packages: pip install 'dinolite[onnx]'"
# onnxruntime against torch, relative to the output's scale (at least 1): float32 kernels differ by about 1e-6
# there; a wrong graph (a batch size or an image size frozen in, another interpolation) is far off.
ONNX_TOLERANCE = 1e-4


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


def _same_file(a: Path, b: Path) -> bool:
    """True when the two files hold the same bytes (compared in blocks: ONNX graphs can be large)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for block in iter(lambda: fa.read(1 << 24), b""):
            if block != fb.read(len(block)):
                return False
    return True


def check_export_folder(spec: BackboneSpec, out: str | Path, onnx: Path | None = None) -> bool:
    """Whether ``out`` can take this export: False for a new or empty folder, True when it already holds
    exactly this export (and, with ``onnx``, this ONNX graph or none); anything else raises a one-line
    UserError. Called before the slow ONNX export, so a refused folder costs nothing."""
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder")
    if not any(out.iterdir()):
        return False
    info_text = json.dumps(export_info(spec), indent=2, sort_keys=True) + "\n"
    state = {k: v.detach().contiguous().cpu() for k, v in spec.state_dict.items()}
    if not _same_export(out, info_text, state):
        raise UserError(f"{out} already holds different files: pass a new or empty folder "
                        f"(nothing is overwritten)")
    old = out / ONNX_FILE
    if onnx is not None and old.exists() and not (old.is_file() and _same_file(old, onnx)):
        raise UserError(f"{old} already holds another ONNX graph: pass a new or empty --out folder "
                        f"(nothing is overwritten)")
    return True


def export_backbone(spec: BackboneSpec, out: str | Path, onnx: Path | None = None, replace: bool = False) -> Path:
    """Write ``out/model.safetensors`` and ``out/config.json`` (and ``out/model.onnx``, a copy of the
    already exported and checked graph ``onnx``), all or nothing: the files are written into a temporary folder
    beside ``out`` and renamed to ``out`` (``files.write_folder``), so a full disk or a kill leaves ``out`` as it
    was. A folder with other content is refused, unless ``replace`` (a run's own export of a backbone trained
    further: the old folder is replaced whole); a second process that published the same export first is fine."""
    out = Path(out)
    try:
        same = check_export_folder(spec, out, onnx)
    except UserError:
        if not replace or not {p.name for p in out.iterdir()} <= {EXPORT_JSON, EXPORT_WEIGHTS, ONNX_FILE}:
            raise  # only an export is replaced, never a folder holding other files
        same = False
    if same and (onnx is None or (out / ONNX_FILE).exists()):
        return out  # the same export again: a no-op
    if same and onnx is not None:  # the same weights already there: add the graph, one atomic file
        with open(onnx, "rb") as src:
            atomic_write(out / ONNX_FILE, lambda f: shutil.copyfileobj(src, f, 1 << 24))
        return out

    def fill(tmp: Path) -> None:
        info_text = json.dumps(export_info(spec), indent=2, sort_keys=True) + "\n"
        write_safetensors(spec.state_dict, tmp / EXPORT_WEIGHTS, {"timm_model": spec.arch})
        write_text(tmp / EXPORT_JSON, info_text)
        if onnx is not None:
            with open(onnx, "rb") as src:
                atomic_write(tmp / ONNX_FILE, lambda f: shutil.copyfileobj(src, f, 1 << 24))

    try:
        write_folder(out, fill, replace)
    except FolderTaken:  # another process exported into ``out`` meanwhile: fine if it is this very export
        if not check_export_folder(spec, out, onnx):
            raise UserError(f"{out} was emptied while exporting: run the same command again") from None
        return export_backbone(spec, out, onnx)  # the same weights: adds the graph if it is not there yet
    return out


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """The ``onnx`` and ``onnxruntime`` modules, or the one-line UserError that names the ``onnx`` extra."""
    try:
        return importlib.import_module("onnx"), importlib.import_module("onnxruntime")
    except ImportError:
        raise UserError(ONNX_MISSING) from None


def default_onnx_size(spec: BackboneSpec) -> int:
    """The ONNX input size when ``--onnx-size`` is not given: the export's ``pretrained_cfg`` input size (the
    run's evaluation view, else the ViT's ``img_size``, else 224), so the graph takes what timm's data config
    of the same export prepares. CNNs have no ``img_size`` and would otherwise get 224 whatever the run."""
    return int(pretrained_cfg(spec)["input_size"][-1])


def _bake_position_embeddings(model: nn.Module, example: Tensor) -> nn.Module:
    """A copy of the timm ViT ``model`` whose position embeddings are a constant for the size of ``example``.

    The ONNX graph has a fixed image size, so the position embeddings it adds are the same for every input:
    they are computed once here, by the model's own ``_pos_embed`` (timm's resampling, or DINO's scale-factor
    interpolation for official checkpoints, with or without register tokens) on zero patch embeddings. The
    TorchScript exporter cannot convert either interpolation (timm's is antialiased bicubic, an operator ONNX
    opset 17 lacks; DINO's passes a scale factor the tracer rejects), and a traced resampling would be a
    constant computation anyway. Other models (CNNs) come back as they are.
    """
    if not isinstance(model, VisionTransformer):
        return model
    vit: Any = copy.deepcopy(model)
    with torch.no_grad():
        patches = vit.patch_embed(example[:1])  # [1, h, w, D] with dynamic_img_size, else [1, N, D]
        table = vit._pos_embed(torch.zeros_like(patches))  # prefix tokens (CLS, registers) + their embeddings
    n = patches.shape[1] * patches.shape[2] if patches.ndim == 4 else patches.shape[1]
    prefix = table.shape[1] - n
    vit.register_buffer("onnx_position_table", table.detach().clone(), persistent=False)

    def fixed_pos_embed(x: Tensor) -> Tensor:
        # timm's _pos_embed is cat(prefix tokens, patches) + embeddings, and prefix tokens do not depend on
        # the image: the same sum as zero-padding the patches in front and adding the precomputed table.
        if x.ndim == 4:
            x = x.flatten(1, 2)
        return F.pad(x, (0, 0, prefix, 0)) + vit.onnx_position_table

    vit._pos_embed = fixed_pos_embed
    return vit


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence file descriptors 1 and 2 while the exporter runs: when a conversion fails, torch's C++ code
    prints the whole TorchScript graph there (hundreds of lines), and dinolite reports one line instead."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (a daemon): nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


def export_onnx(model: nn.Module, path: Path, in_chans: int, img_size: int, name: str = "the backbone") -> float:
    """Write ``model`` to ``path`` as ONNX (opset 17, input ``images`` ``[batch, in_chans, img_size, img_size]``
    with a dynamic batch axis, output ``features``), via the TorchScript exporter, and check the graph with
    onnx's checker and with onnxruntime against torch on one image (the trace uses 2, so a batch size frozen
    into the graph shows). Returns the largest absolute difference. A model that cannot run at this size, cannot
    be traced or converted, or whose graph disagrees with torch raises a one-line UserError and leaves no file
    at ``path``. Needs onnx and onnxruntime (the ``onnx`` extra)."""
    onnx, onnxruntime = require_onnx()
    try:
        return _export_and_check(onnx, onnxruntime, model, path, in_chans, img_size, name)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _export_and_check(onnx: Any, onnxruntime: Any, model: nn.Module, path: Path, in_chans: int, img_size: int,
                      name: str) -> float:
    """The steps of :func:`export_onnx`: run, trace, convert, check, compare."""
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, in_chans, img_size, img_size, generator=gen)
    size = f"{in_chans} x {img_size} x {img_size} input"
    try:
        with torch.no_grad():
            model(x)
    except Exception as err:  # noqa: BLE001 - shape errors of any model at a size it cannot take
        raise UserError(f"{name} cannot run on a {size} ({_first_line(err)}): pick another --onnx-size") from None
    traced = _bake_position_embeddings(model, x)
    try:
        with warnings.catch_warnings(), _quiet_fds():
            warnings.simplefilter("ignore")  # the tracer's notes on timm's shape checks; the size is fixed
            torch.onnx.export(traced, (x,), str(path), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        onnx.checker.check_model(str(path))
    except Exception as err:  # noqa: BLE001 - tracing and conversion fail in many ways inside torch and onnx
        raise UserError(f"{name} cannot be exported to ONNX at a {size} ({_first_line(err)}); "
                        f"nothing was written") from None
    image = torch.randn(1, in_chans, img_size, img_size, generator=gen)
    with torch.no_grad():
        want = model(image)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": image.numpy()})[0])
    except Exception as err:  # noqa: BLE001 - onnxruntime's own error types (Fail, InvalidGraph, ...)
        raise UserError(f"onnxruntime cannot run the ONNX graph of {name} ({_first_line(err)}); "
                        f"nothing was written") from None
    tolerance = ONNX_TOLERANCE * max(1.0, want.abs().max().item())
    diff = (got - want).abs().max().item() if got.shape == want.shape else math.inf
    if not diff <= tolerance:
        raise UserError(f"the ONNX graph of {name} differs from torch in onnxruntime (output {tuple(got.shape)} "
                        f"vs {tuple(want.shape)}, max abs difference {diff:.3g}); nothing was written")
    return diff
