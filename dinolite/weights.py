"""Find a backbone's weights wherever they are: a run directory, a dinolite checkpoint, an export,
the run's ``teacher_backbone.safetensors``, an official DINO checkpoint (facebookresearch/dino), an official
DINOv2 backbone or a Hugging Face ``transformers`` folder (``dinolite.layouts``).

Everything is read without executing code: ``.pt``/``.pth`` files through ``torch.load(...,
weights_only=True)`` and ``.safetensors`` files through safetensors. The result is a timm
VisionTransformer (the names DINO's own ViT used for patch_embed, cls_token, pos_embed, blocks
and norm are timm's names, so official weights map on after stripping wrapper prefixes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import timm
import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from .config import Config, read_saved_config
from .engine import checkpoint as ckpt
from .errors import UserError
from .layouts import dinov2, hf
from .maths.models import backbone_kwargs
from .statedict import inner_state, is_tensor_dict, key_problems

EXPORT_JSON = "config.json"
EXPORT_WEIGHTS = "model.safetensors"


@dataclass
class BackboneSpec:
    """A timm backbone's name and ``create_model`` kwargs, its weights, and where they came from."""

    arch: str
    kwargs: dict
    state_dict: dict
    source: Path  # the file the weights were read from
    kind: str  # "dinolite-checkpoint", "dinolite-export", "dino-official"
    config: Config | None = None  # the run's config when known (data, eval transform, normalisation)
    extra: dict = field(default_factory=dict)
    # How position embeddings follow the image size: "timm" (timm's resampling), or "dino" (the reference
    # code's, see dinolite.pos_embed): official DINO checkpoints use it unless told otherwise.
    pos_interp: str = "timm"

    def build(self) -> nn.Module:
        """The timm model with these weights, in eval mode; mismatches raise a one-line UserError."""
        if not isinstance(self.arch, str) or not timm.is_model(self.arch.split(".")[0]):
            raise UserError(f"{self.source}: {self.arch!r} is not a timm model name")
        try:
            model = timm.create_model(self.arch, pretrained=False, **self.kwargs)
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            raise UserError(f"{self.source}: timm cannot build {self.arch} with {self.kwargs} "
                            f"({str(err).splitlines()[0][:120]})") from None
        load_into(model, self.state_dict, self.source)
        if self.pos_interp == "dino":
            from .pos_embed import use_dino_pos_embed

            try:
                use_dino_pos_embed(model)
            except (ValueError, AttributeError):  # registers, no class token, or a CNN (no cls_token at all)
                raise UserError(f"{self.source}: --pos-interp dino applies to ViTs with a class token and no "
                                f"register tokens; {self.arch} is not one: use --pos-interp timm") from None
        return model.eval()

    def fingerprint(self) -> str:
        """16 hex digits of the weights file's SHA-256 (names feature caches)."""
        return file_sha256(self.source)[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def read_weights_file(path: Path) -> tuple[dict, dict]:
    """``(object, safetensors metadata)`` of a ``.safetensors`` or torch file, never running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: pass a run directory, a checkpoint file or an export directory")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    try:
        # Official DINO training checkpoints hold their argparse.Namespace of arguments: a plain
        # attribute bag that is allow-listed; anything else that needs code stays refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return ckpt.load(path), {}
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text and ("global" in text.lower() or "reduce" in text.lower()):
            raise UserError(f"refused to load {path}: it holds pickled objects that would run code "
                            f"(only tensors and plain containers are loaded; re-save its state_dict)") from None
        raise UserError(f"{path} is not a dinolite or DINO checkpoint (not a torch file of tensors)") from None
    except Exception as err:  # noqa: BLE001 - a zero-byte, truncated or foreign file fails in many ways inside torch
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise UserError(f"{path} is not a dinolite or DINO checkpoint{empty} "
                        f"(torch cannot read it: {first})") from None


def bare_name(name: str) -> str:
    """A parameter name without wrapper prefixes (``module.`` of DDP, ``_orig_mod.`` of torch.compile)."""
    changed = True
    while changed:
        changed = False
        for p in ("module.", "_orig_mod."):
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def strip_prefixes(state: dict) -> dict:
    """The backbone's tensors under timm's names: wrapper prefixes dropped (:func:`bare_name`), and when the
    dict holds a whole DINO model (``backbone.*``, ``head.*``, iBOT's ``patch_head.*`` and ``mask_token``) only
    its ``backbone.*`` part."""
    named = {bare_name(k): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in named):
        return {bare_name(k[len("backbone."):]): v for k, v in named.items() if k.startswith("backbone.")}
    return {k: v for k, v in named.items() if not k.startswith("head.")}


def pick_state(obj, checkpoint_key: str, path: Path) -> tuple[dict, str]:
    """The backbone's tensors inside a loaded checkpoint object, and which layout it had."""
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a dinolite or DINO checkpoint "
                        f"(it holds a {type(obj).__name__}, not a dict of tensors)")
    if "students" in obj:  # a distillation run's checkpoint: its students are exported one by one
        names = sorted({k.split(".")[1] for k in obj["students"] if k.startswith("backbones.")})
        raise UserError(f"{path} is a distillation run's checkpoint: pass one of its students' exports, "
                        f"{path.parent / 'students'}/<name> ({', '.join(names)})")
    if "teacher" in obj or "student" in obj:
        if checkpoint_key not in obj:
            raise UserError(f"{path} has no '{checkpoint_key}' entry (it has {sorted(obj)[:8]}): "
                            f"pass --checkpoint-key teacher or student")
        state = obj[checkpoint_key]
        kind = "dinolite-checkpoint" if "config" in obj else "dino-official"
    elif "state_dict" in obj or "model" in obj:
        state, kind = obj.get("state_dict", obj.get("model")), "dino-official"
    else:
        state, kind = obj, "dino-official"
    if not is_tensor_dict(state):
        raise UserError(f"{path} is not a dinolite or DINO checkpoint: no dict of tensors under the expected keys")
    state = strip_prefixes(state)
    if kind == "dino-official" and ("cls_token" not in state or "patch_embed.proj.weight" not in state):
        raise UserError(f"{path} is not a dinolite or DINO ViT checkpoint: no cls_token / patch_embed.proj.weight "
                        f"after stripping module./backbone. prefixes (first keys: {list(state)[:4]})")
    return state, kind


def infer_vit_kwargs(state: dict) -> tuple[str, dict]:
    """timm name and kwargs of the ViT that fits an official DINO state dict.

    Width, depth, patch size, channels, MLP ratio, qkv bias and the training resolution are read
    from the tensors; the number of heads is not stored anywhere, so it follows DINO's rule of
    64 dimensions per head (ViT-S/16: 384 / 6, ViT-B/16: 768 / 12).
    """
    embed_dim = state["cls_token"].shape[-1]
    proj = state["patch_embed.proj.weight"]
    patch = proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    tokens = state["pos_embed"].shape[1] - 1
    grid = round(tokens ** 0.5)
    kw = dict(num_classes=0, dynamic_img_size=True, img_size=grid * patch, in_chans=proj.shape[1],
              patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // 64),
              mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
              qkv_bias="blocks.0.attn.qkv.bias" in state)
    names = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224"}
    return names.get(embed_dim, "vit_base_patch16_224"), kw


def load_into(model: nn.Module, state: dict, source: Path) -> None:
    """Strict load with a one-line error naming the keys that do not fit (``statedict.key_problems``)."""
    problems = key_problems(model.state_dict(), state)
    if problems:
        raise UserError(f"{source} does not fit the {type(model).__name__} ({problems}): pass weights of this "
                        f"architecture")
    model.load_state_dict(state)


def _from_run_dir(run_dir: Path, checkpoint_key: str) -> BackboneSpec:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a dinolite run directory (no config.yaml) nor an export directory")
    cfg = read_saved_config(cfg_path)
    path = ckpt.list_checkpoints(run_dir)
    if path:
        newest, obj = ckpt.latest_valid(run_dir)
        if obj is None or newest is None:
            raise UserError(f"no checkpoint in {run_dir} can be read; pass a checkpoint file")
        return _from_object(obj, {}, newest, checkpoint_key, cfg)
    exported = run_dir / "teacher_backbone.safetensors"
    if exported.is_file() and checkpoint_key == "teacher":
        return from_file(exported, checkpoint_key)
    raise UserError(f"{run_dir} holds no checkpoint yet: run 'dinolite pretrain' first")


def _from_object(obj, meta: dict, path: Path, checkpoint_key: str, cfg: Config | None = None) -> BackboneSpec:
    if meta.get("arch") and meta.get("timm_kwargs"):  # teacher_backbone.safetensors of a run
        try:
            raw = OmegaConf.to_container(OmegaConf.create(meta["timm_kwargs"]))
        except Exception as err:  # noqa: BLE001 - YAML or OmegaConf errors on a foreign file's metadata
            raise UserError(f"{path}: its timm_kwargs metadata is not readable ({str(err).splitlines()[0]})") from None
        kwargs = check_timm_kwargs(raw, path)
        cfg = cfg or _run_config_near(path)
        return BackboneSpec(meta["arch"], kwargs, obj, path, "dinolite-export", cfg)
    bare = inner_state(obj)
    if isinstance(bare, dict) and is_tensor_dict(bare) and dinov2.is_dinov2(strip_prefixes(bare)):  # DINOv2's own
        state, _ = dinov2.to_timm(strip_prefixes(bare), path)
        return layout_spec(state, dinov2.vit_fields(state), path, "dinov2-official")
    state, kind = pick_state(obj, checkpoint_key, path)
    if kind == "dinolite-checkpoint":
        cfg = cfg or cast(Config, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), obj["config"])))
        kwargs = backbone_kwargs(cfg.model, len(cfg.augment.mean), cfg.augment.global_crops_size, 0.0)
        return BackboneSpec(cfg.model.arch, kwargs, state, path, kind, cfg)
    arch, kwargs = infer_vit_kwargs(state)
    return BackboneSpec(arch, kwargs, state, path, kind, None, pos_interp="dino")


def layout_spec(state: dict, fields: dict, path: Path, kind: str) -> BackboneSpec:
    """The spec of a timm-named ViT state dict whose ``model.*`` fields a layout gave (DINOv2, Hugging Face),
    built at the grid and channels of its position and patch embeddings."""
    prefix = 0 if fields.get("no_embed_class") else 1 + int(fields.get("reg_tokens") or 0)
    grid = round((state["pos_embed"].shape[1] - prefix) ** 0.5) if "pos_embed" in state else 14
    kwargs = dict(num_classes=0, dynamic_img_size=True, img_size=grid * fields["patch_size"],
                  in_chans=int(state["patch_embed.proj.weight"].shape[1]),
                  **{k: v for k, v in fields.items() if k != "arch" and v is not None})
    return BackboneSpec(fields["arch"], kwargs, state, path, kind)


def _hf_spec(folder: Path) -> BackboneSpec:
    info = hf.read_config(folder)
    weights = folder / EXPORT_WEIGHTS
    if not weights.is_file():
        raise UserError(f"{folder} holds no {EXPORT_WEIGHTS}: save the model with safe_serialization=True")
    state, _ = hf.to_timm(read_weights_file(weights)[0], info, weights)
    return layout_spec(state, hf.model_fields(info), weights, f"hf-{info['model_type']}")


def _run_config_near(path: Path) -> Config | None:
    saved = Path(path).parent / "config.yaml"
    return read_saved_config(saved) if saved.is_file() else None


# ``timm.create_model`` keyword arguments that describe an architecture. Anything else in a file from elsewhere
# (``checkpoint_path``, ``pretrained_cfg_overlay``, ...) would make timm read other files or change how it
# loads, so it is refused.
ARCH_KWARGS = frozenset({
    "num_classes", "in_chans", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
    "qk_norm", "dynamic_img_size", "dynamic_img_pad", "reg_tokens", "class_token", "no_embed_class", "global_pool",
    "init_values", "pos_embed", "pre_norm", "final_norm", "fc_norm", "drop_rate", "drop_path_rate", "attn_drop_rate",
    "proj_drop_rate", "pos_drop_rate", "patch_drop_rate", "output_stride", "layers", "channels", "dims", "depths",
    "stem_width", "stem_type", "width_factor", "cardinality", "base_width",
})


def check_timm_kwargs(kwargs, source: Path) -> dict:
    """``kwargs`` if it is a mapping of architecture arguments with plain values, else a one-line UserError."""
    if not isinstance(kwargs, dict):
        raise UserError(f"{source}: timm_kwargs must be a mapping of timm.create_model arguments, "
                        f"not {type(kwargs).__name__}")
    unknown = sorted(k for k in kwargs if k not in ARCH_KWARGS)
    if unknown:
        raise UserError(f"{source}: timm_kwargs has {', '.join(map(repr, unknown))}, not an architecture argument: "
                        f"only {', '.join(sorted(ARCH_KWARGS)[:6])}, ... are accepted; remove it")
    plain = (int, float, bool, str, type(None))
    for k, v in kwargs.items():
        if not (isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v))):
            raise UserError(f"{source}: timm_kwargs[{k!r}] must be a number, string, boolean or list, "
                            f"not {type(v).__name__}")
    return kwargs


def _export_info(folder: Path) -> dict:
    """The export's config.json, checked: JSON, the fields dinolite needs, a weights file inside the folder."""
    path = folder / EXPORT_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not readable JSON ({str(err).splitlines()[0]}): "
                        f"re-export with 'dinolite export'") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} holds a JSON {type(info).__name__}, not an object: re-export with 'dinolite export'")
    for key, kind in (("timm_model", str), ("timm_kwargs", dict)):
        if not isinstance(info.get(key), kind):
            raise UserError(f"{path} is not a dinolite export: '{key}' is missing or not a {kind.__name__}; "
                            f"re-export with 'dinolite export'")
    name = info.get("file", EXPORT_WEIGHTS)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: 'file' must name the weights file in the folder")
    weights = (folder / name).resolve()
    if weights.parent != folder.resolve():
        raise UserError(f"{path}: 'file' {name!r} points outside the export folder: the weights must lie in {folder}")
    if "dinolite_config" in info and not isinstance(info["dinolite_config"], dict):
        raise UserError(f"{path}: 'dinolite_config' must be an object")
    check_timm_kwargs(info["timm_kwargs"], path)
    info["_weights"] = weights
    return info


def _from_export_dir(folder: Path) -> BackboneSpec:
    info = _export_info(folder)
    weights = info.pop("_weights")
    state, _ = read_weights_file(weights)
    cfg = None
    if "dinolite_config" in info:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(Config), info["dinolite_config"])
            cfg = cast(Config, OmegaConf.to_object(merged))
        except Exception as err:  # noqa: BLE001 - OmegaConf's validation errors
            raise UserError(f"{folder / EXPORT_JSON}: 'dinolite_config' does not fit dinolite's config "
                            f"({str(err).splitlines()[0]}): re-export with 'dinolite export'") from None
    return BackboneSpec(info["timm_model"], info["timm_kwargs"], state, weights, "dinolite-export", cfg, info)


def from_file(path: Path, checkpoint_key: str = "teacher") -> BackboneSpec:
    obj, meta = read_weights_file(path)
    return _from_object(obj, meta, Path(path), checkpoint_key)


def resolve(path: str | Path, checkpoint_key: str = "teacher") -> BackboneSpec:
    """A run directory, an export directory (or its config.json), or a weights file -> BackboneSpec."""
    if checkpoint_key not in ("teacher", "student"):
        raise UserError(f"--checkpoint-key must be teacher or student, not {checkpoint_key!r}")
    path = Path(path)
    if path.is_dir():
        if hf.is_hf_folder(path):
            return _hf_spec(path)
        if (path / EXPORT_JSON).is_file():
            return _from_export_dir(path)
        return _from_run_dir(path, checkpoint_key)
    if path.name == EXPORT_JSON and path.is_file():
        return _from_export_dir(path.parent)
    return from_file(path, checkpoint_key)


def load_backbone(path: str | Path, checkpoint_key: str = "teacher") -> nn.Module:
    """A pretrained timm backbone (eval mode, returns the CLS or pooled embedding) from any of the layouts above."""
    return resolve(path, checkpoint_key).build()
