"""Where the fine-tuned network comes from and goes to: ``--init`` resolution, building a fresh
classifier from it, and saving / reloading a fine-tuned model (born-again teachers).

``--init`` takes what ``dinolite.weights.resolve`` takes (run directory, checkpoint, export,
``.safetensors``, official DINO file) or ``timm:NAME`` (timm's pretrained weights, or a seeded
random init with ``model.timm_pretrained=false``). The init weights are read once; every model
built from them (each born-again generation) starts from the same tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..engine import checkpoint as ckpt
from ..errors import UserError
from ..export import write_safetensors
from ..maths.models import is_vit
from ..weights import check_timm_kwargs, load_into, read_weights_file, resolve
from .config import FinetuneConfig
from .exits import MultiExitViT

META_KEY = "dinolite_finetune"
MODEL_FILE = "model.safetensors"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
_ARCH_KEYS = ("patch_size", "embed_dim", "depth", "num_heads", "in_chans", "mlp_ratio", "qkv_bias", "img_size")


@dataclass
class InitSpec:
    """A backbone's timm name, ``create_model`` kwargs (``num_classes=0``), weights and normalisation."""

    arch: str
    kwargs: dict
    state_dict: dict
    source: str
    mean: list[float] | None = None
    std: list[float] | None = None
    trained_size: int | None = None  # the pretraining crop size, when known (a CNN's kwargs do not say it)

    @property
    def depth(self) -> int:
        """Transformer blocks in the weights; 0 for a CNN."""
        return 1 + max((int(k.split(".")[1]) for k in self.state_dict if k.startswith("blocks.")), default=-1)

    @property
    def img_size(self) -> int:
        """The image size the backbone was trained at: a ViT's ``img_size``, else the pretraining crop, else 224."""
        size = self.kwargs.get("img_size", self.trained_size or 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)


def _from_timm(name: str, cfg: FinetuneConfig, in_chans: int) -> InitSpec:
    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"--init timm:{name}: not a timm model; pick one of timm.list_models() (a ViT or a CNN)")
    vit_args = {"dynamic_img_size": True} if is_vit(name) else {}  # CNNs take any size as they are
    kwargs = dict(num_classes=0, in_chans=in_chans, **vit_args, **cfg.model.timm_kwargs)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model: Any = timm.create_model(name, pretrained=cfg.model.timm_pretrained, **kwargs)  # timm's attributes
    except (TypeError, ValueError, AssertionError) as err:
        raise UserError(f"cannot build timm:{name} with model.timm_kwargs={cfg.model.timm_kwargs} ({err})") from None
    except (RuntimeError, OSError) as err:  # no network or no cached file for the pretrained weights
        raise UserError(f"cannot fetch timm's pretrained weights for {name} ({str(err).splitlines()[0][:120]}): "
                        f"put them in the Hugging Face cache, or pass model.timm_pretrained=false") from None
    pc = getattr(model, "pretrained_cfg", {}) or {}
    if hasattr(model, "patch_embed"):
        kwargs["img_size"] = model.patch_embed.img_size[0]
    mean, std = list(pc.get("mean", IMAGENET[0])), list(pc.get("std", IMAGENET[1]))
    size = pc.get("input_size", (in_chans, 224, 224))[-1]
    return InitSpec(name, kwargs, model.state_dict(), f"timm:{name}", mean, std, int(size))


def resolve_init(cfg: FinetuneConfig, in_chans: int) -> InitSpec:
    """The backbone named by ``cfg.init``; its channel count must match the data's."""
    if cfg.init.startswith("timm:"):
        spec = _from_timm(cfg.init[len("timm:"):], cfg, in_chans)
    else:
        b = resolve(cfg.init, "teacher")
        kwargs = {k: v for k, v in b.kwargs.items() if k != "drop_path_rate"}
        mean = list(b.config.augment.mean) if b.config is not None else None
        std = list(b.config.augment.std) if b.config is not None else None
        size = b.config.augment.global_crops_size if b.config is not None else None
        spec = InitSpec(b.arch, kwargs, b.state_dict, str(b.source), mean, std, size)
    have = spec.kwargs.get("in_chans", 3)
    if have != in_chans:
        raise UserError(f"--init {cfg.init} takes {have}-channel images but the data has {in_chans} channel(s): "
                        f"pick data or an --init with the same number of channels")
    return spec


def normalisation(cfg: FinetuneConfig, init: InitSpec, channels: int) -> tuple[list[float], list[float]]:
    """``augment.mean/std`` when set, else the pretraining run's, else ImageNet's (averaged for 1 channel)."""
    if cfg.augment.mean:
        mean, std = list(cfg.augment.mean), list(cfg.augment.std)
    elif init.mean is not None and init.std is not None and len(init.mean) == channels:
        mean, std = list(init.mean), list(init.std)
    else:
        mean, std = IMAGENET
        if channels == 1:
            mean, std = [sum(mean) / 3], [sum(std) / 3]
    if len(mean) != channels:
        raise UserError(f"augment.mean/std have {len(mean)} values but the images have {channels} channel(s): "
                        f"set augment.mean and augment.std to {channels} value(s)")
    return mean, std


def build_model(init: InitSpec, num_classes: int, exit_blocks: list[int], hint: bool, drop_path_rate: float,
                head_std: float, seed: int) -> MultiExitViT:
    """A fresh classifier: the init backbone's weights, new heads drawn from ``seed``."""
    kwargs = {**init.kwargs, "num_classes": 0, "drop_path_rate": drop_path_rate}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit: Any = timm.create_model(init.arch, pretrained=False, **kwargs)  # timm's reset/get_classifier
        load_into(vit, init.state_dict, Path(init.source))
        vit.reset_classifier(num_classes)
        classifier = vit.get_classifier()  # a ViT's head, a ResNet's fc, ...
        nn.init.trunc_normal_(classifier.weight, std=head_std)
        nn.init.zeros_(classifier.bias)
        return MultiExitViT(vit, exit_blocks, hint, head_std)


def model_meta(model: MultiExitViT, init: InitSpec, classes: list[str], image_size: int, mean, std) -> dict:
    """What rebuilding the model needs (timm name and kwargs, exits), and the classes it predicts."""
    kwargs = {k: v for k, v in init.kwargs.items() if k != "drop_path_rate"}
    return {"arch": init.arch, "timm_kwargs": {**kwargs, "num_classes": model.vit.num_classes},
            "exit_blocks": list(model.exit_blocks), "hint": len(model.hints) > 0, "classes": list(classes),
            "image_size": image_size, "mean": list(mean), "std": list(std), "init": init.source}


def save_model(model: MultiExitViT, meta: dict, path: Path) -> None:
    write_safetensors(model.state_dict(), path, {META_KEY: json.dumps(meta)})


def rebuild(meta: dict, state: dict, source: Path) -> MultiExitViT:
    """A saved fine-tuned model, without drop path, in eval mode."""
    kwargs = {**check_timm_kwargs(meta.get("timm_kwargs"), source), "drop_path_rate": 0.0}
    num_classes = kwargs.pop("num_classes", 0)
    vit = timm.create_model(meta["arch"], pretrained=False, num_classes=num_classes, **kwargs)
    model = MultiExitViT(vit, meta["exit_blocks"], meta["hint"])
    load_into(model, state, source)
    return model.eval()


def read_model(path: str | Path) -> tuple[dict, dict, Path]:
    """``(meta, state_dict, file)`` of a fine-tuned model: a run directory, its model file or a checkpoint."""
    file = Path(path)
    if file.is_dir():
        if (file / MODEL_FILE).is_file():
            file = file / MODEL_FILE
        else:
            last = ckpt.list_checkpoints(file)
            if not last:
                raise UserError(f"{file} holds no {MODEL_FILE} nor checkpoint: pass a finished 'dinolite finetune' run")
            file = last[-1]
    obj, meta = read_weights_file(file)
    if META_KEY in meta:
        return json.loads(meta[META_KEY]), obj, file
    if isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and "model" in obj:
        return obj["meta"], obj["model"], file
    raise UserError(f"{file} is not a 'dinolite finetune' model (no {META_KEY} metadata): "
                    f"pass a run directory or model file written by 'dinolite finetune'")


def check_teacher(teacher: dict, student: dict, source: Path) -> None:
    """A teacher must have the student's architecture and classes; the message says which differs."""
    t_kw, s_kw = teacher["timm_kwargs"], student["timm_kwargs"]
    diffs = [f"{k} {t_kw.get(k)} vs {s_kw.get(k)}" for k in _ARCH_KEYS if t_kw.get(k) != s_kw.get(k)]
    if teacher["arch"] != student["arch"] or diffs:
        arch = [f"arch {teacher['arch']} vs {student['arch']}"] if teacher["arch"] != student["arch"] else []
        what = "; ".join(arch + diffs)
        raise UserError(f"teacher {source} has another architecture than the student ({what}, teacher vs student): "
                        f"pass a teacher fine-tuned from the same --init")
    if t_kw["num_classes"] != s_kw["num_classes"]:
        raise UserError(f"teacher {source} predicts {t_kw['num_classes']} classes but the data has "
                        f"{s_kw['num_classes']}: pass a teacher fine-tuned on this data")
    if teacher["classes"] != student["classes"]:
        # as many classes on both sides (num_classes matched above)
        first = next(i for i, (a, b) in enumerate(zip(teacher["classes"], student["classes"], strict=True)) if a != b)
        raise UserError(f"teacher {source} has other classes than the data (class {first}: "
                        f"{teacher['classes'][first]!r} vs {student['classes'][first]!r}): "
                        f"pass a teacher fine-tuned on this data")
