"""The config's checks: range checks of the sections that pretraining and fine-tuning share (in one place so both
refuse the same values with the same words), and pretraining's :func:`validate`. Each check is ``(ok, message)``;
a message names the key and what it must be."""

from __future__ import annotations

import math
import re
from pathlib import Path

from .errors import UserError
from .schema import Config, student_name

Check = tuple[bool, str]


def finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def probability(name: str, value: float) -> Check:
    return finite(value) and 0 <= value <= 1, f"{name} must be a probability in [0, 1], not {value}"


def at_least(name: str, value: float, low: float, note: str = "") -> Check:
    return finite(value) and value >= low, f"{name} must be >= {low:g}{note}, not {value}"


def positive(name: str, value: float, note: str = "") -> Check:
    return finite(value) and value > 0, f"{name} must be > 0{note}, not {value}"


def data_checks(d) -> list[Check]:
    """``DataConfig``: the source, worker and subset counts, and the bad-sample limit."""
    return [
        (d.source in ("folder", "fashion_mnist", "shards"),
         "data.source must be 'folder', 'fashion_mnist' or 'shards'"),
        (d.source != "shards" or not (d.subset or d.test_subset),
         "data.subset/test_subset do not apply to shards: write fewer samples with 'dinolite shards --subset N'"),
        at_least("data.num_workers", d.num_workers, 0, " (0 = load in the main process)"),
        at_least("data.subset", d.subset, 0, " (0 = every image)"),
        at_least("data.test_subset", d.test_subset, 0, " (0 = every image)"),
        at_least("data.decode_size", d.decode_size, 8),
        at_least("data.shuffle_buffer", d.shuffle_buffer, 1),
        probability("data.max_bad_fraction", d.max_bad_fraction),
    ]


def train_checks(t) -> list[Check]:
    """The engine's ``train`` keys (``config.EngineConfig``), which both tasks' ``train`` sections inherit."""
    return [
        (t.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda"),
        at_least("train.seed", t.seed, 0),
        at_least("train.threads", t.threads, 0, " (0 = torch's default)"),
        at_least("train.log_every", t.log_every, 1),
        positive("train.checkpoint_every_minutes", t.checkpoint_every_minutes),
        at_least("train.keep_checkpoints", t.keep_checkpoints, 1),
        at_least("train.stop_after_steps", t.stop_after_steps, 0, " (0 = run to the end)"),
        (all(name in ("jsonl", "tensorboard", "wandb") for name in t.loggers),
         f"train.loggers must list jsonl, tensorboard and/or wandb, not {list(t.loggers)}"),
        (t.wandb_mode in ("offline", "online", "disabled"), "train.wandb_mode must be offline, online or disabled"),
    ]


def patch_size_of(arch: str, override: int | None) -> int | None:
    """A ViT's patch size from the override or the timm name (``..._patch16_...``); None for other models."""
    if override is not None:
        return override
    found = re.search(r"patch(\d+)", arch)
    return int(found.group(1)) if found else None


def validate(cfg: Config) -> None:
    """Every key's range, and what types alone cannot express; each failure names the key and the fix.

    Run before anything is built or written, so a bad value never costs a run directory or a training.
    """
    a, d, m, o, lc, e, t = cfg.augment, cfg.data, cfg.model, cfg.optim, cfg.loss, cfg.eval, cfg.train
    patch = patch_size_of(m.arch, m.patch_size)
    checks = [
        *data_checks(d),
        (d.source != "shards" or bool(d.eval_shards) or not e.knn_at_end,
         "data.source=shards needs data.eval_shards (the test split's shards) for the k-NN, or eval.knn_at_end=false"),
        (len(a.global_crops_scale) == 2 and 0 < a.global_crops_scale[0] <= a.global_crops_scale[1] <= 1,
         "augment.global_crops_scale must be [low, high] with 0 < low <= high <= 1"),
        (len(a.local_crops_scale) == 2 and 0 < a.local_crops_scale[0] <= a.local_crops_scale[1] <= 1,
         "augment.local_crops_scale must be [low, high] with 0 < low <= high <= 1"),
        at_least("augment.local_crops_number", a.local_crops_number, 0),
        at_least("augment.global_crops_size", a.global_crops_size, 1),
        at_least("augment.local_crops_size", a.local_crops_size, 1),
        (patch is None or patch < 1
         or (a.global_crops_size >= patch and (a.local_crops_number == 0 or a.local_crops_size >= patch)),
         f"augment.global_crops_size ({a.global_crops_size}) and augment.local_crops_size ({a.local_crops_size}) "
         f"must be at least the patch size ({patch}): raise the crop sizes or lower model.patch_size"),
        *[probability(f"augment.{k}", getattr(a, k)) for k in ("flip_p", "jitter_p", "grayscale_p", "solarize_p")],
        (len(a.blur_p) == 3, "augment.blur_p must list 3 probabilities: global 1, global 2, local"),
        *[probability("augment.blur_p", p) for p in a.blur_p],
        *[at_least(f"augment.{k}", getattr(a, k), 0) for k in ("brightness", "contrast", "saturation")],
        (finite(a.hue) and 0 <= a.hue <= 0.5, f"augment.hue must be in [0, 0.5], not {a.hue}"),
        (len(a.blur_sigma) == 2 and finite(*a.blur_sigma) and 0 < a.blur_sigma[0] <= a.blur_sigma[1],
         "augment.blur_sigma must be [low, high] > 0"),
        (len(a.mean) == len(a.std) and len(a.mean) in (1, 3), "augment.mean/std must both have 1 or 3 values"),
        (all(finite(s) and s > 0 for s in a.std) and finite(*a.mean),
         "augment.std values must be > 0 (and mean finite)"),
        *[at_least(f"model.{k}", getattr(m, k), 1) for k in ("patch_size", "embed_dim", "depth", "num_heads")
          if getattr(m, k) is not None],
        (m.embed_dim is None or m.num_heads is None or m.num_heads < 1 or m.embed_dim % m.num_heads == 0,
         f"model.embed_dim ({m.embed_dim}) must be a multiple of model.num_heads ({m.num_heads})"),
        (m.reg_tokens is None or m.reg_tokens >= 0, "model.reg_tokens must be >= 0"),
        (m.mlp_ratio is None or (finite(m.mlp_ratio) and m.mlp_ratio > 0), "model.mlp_ratio must be > 0"),
        (m.init_head_warmup is None or 0 <= m.init_head_warmup < 1, "model.init_head_warmup must be in [0, 1)"),
        (m.init_backbone_lr is None or (finite(m.init_backbone_lr) and 0 < m.init_backbone_lr <= 1),
         "model.init_backbone_lr must be in (0, 1]"),
        (m.init_layer_decay is None or (finite(m.init_layer_decay) and 0 < m.init_layer_decay <= 1),
         "model.init_layer_decay must be in (0, 1]"),
        *_distill_checks(cfg),
        (not m.init or Path(m.init).exists(),
         f"model.init={m.init} not found: pass a dinolite run or checkpoint, a DINO full checkpoint, or a backbone "
         f"(export, timm / DINOv2 weights, Hugging Face folder)"),
        (finite(m.drop_path_rate) and 0 <= m.drop_path_rate < 1,
         f"model.drop_path_rate must be in [0, 1), not {m.drop_path_rate}"),
        (m.out_dim >= 2 and m.head_layers >= 1, "model.out_dim must be >= 2 and model.head_layers >= 1"),
        at_least("model.hidden_dim", m.hidden_dim, 1),
        at_least("model.bottleneck_dim", m.bottleneck_dim, 1),
        *[positive(f"loss.{k}", getattr(lc, k)) for k in ("student_temp", "teacher_temp", "warmup_teacher_temp")],
        probability("loss.center_momentum", lc.center_momentum),
        (lc.centering in ("center", "sinkhorn_knopp"), "loss.centering must be 'center' or 'sinkhorn_knopp'"),
        (t.precision in ("auto", "fastest", "fp32", "bf16"), "train.precision must be auto, fastest, fp32 or bf16"),
        at_least("loss.sinkhorn_iterations", lc.sinkhorn_iterations, 1),
        at_least("loss.koleo_weight", lc.koleo_weight, 0, " (0 = off)"),
        at_least("loss.ibot_weight", lc.ibot_weight, 0, " (0 = off)"),
        (len(lc.ibot_mask_ratio) == 2 and finite(*lc.ibot_mask_ratio)
         and 0 <= lc.ibot_mask_ratio[0] <= lc.ibot_mask_ratio[1] <= 1,
         "loss.ibot_mask_ratio must be [low, high] with 0 <= low <= high <= 1"),
        probability("loss.ibot_mask_probability", lc.ibot_mask_probability),
        (o.optimizer in ("adamw", "sgd"), "optim.optimizer must be adamw or sgd"),
        at_least("optim.epochs", o.epochs, 1),
        at_least("optim.batch_size", o.batch_size, 1),
        (o.total_steps is None or o.total_steps >= 1, "optim.total_steps must be >= 1 (or unset to use optim.epochs)"),
        positive("optim.lr", o.lr),
        at_least("optim.min_lr", o.min_lr, 0),
        (o.lr_schedule in ("cosine", "wsd"), f"optim.lr_schedule must be cosine or wsd, not {o.lr_schedule!r}"),
        (finite(o.lr_decay_fraction) and 0 < o.lr_decay_fraction <= 1,
         f"optim.lr_decay_fraction must be in (0, 1], not {o.lr_decay_fraction}"),
        at_least("optim.weight_decay", o.weight_decay, 0),
        at_least("optim.weight_decay_end", o.weight_decay_end, 0),
        at_least("optim.clip_grad", o.clip_grad, 0, " (0 = no clipping)"),
        probability("optim.momentum_teacher", o.momentum_teacher),
        probability("optim.momentum_teacher_end", o.momentum_teacher_end),
        *_span_checks(cfg),
        *train_checks(t),
        at_least("train.budget_minutes", t.budget_minutes, 0, " (0 = no budget)"),
        at_least("train.collapse_patience", t.collapse_patience, 1),
        at_least("eval.knn_k", e.knn_k, 1),
        positive("eval.knn_temperature", e.knn_temperature),
        at_least("eval.image_size", e.image_size, 1),
        (finite(e.crop_ratio) and 0 < e.crop_ratio <= 1, f"eval.crop_ratio must be in (0, 1], not {e.crop_ratio}"),
        at_least("eval.batch_size", e.batch_size, 1),
        (e.online_every >= 0 and e.online_every % t.log_every == 0 if t.log_every >= 1 else True,
         "eval.online_every must be 0 (off) or a multiple of train.log_every"),
        (e.online_bank >= 1 and e.online_queries >= 1, "eval.online_bank and eval.online_queries must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(f"invalid config: {msg}")


def _distill_checks(cfg: Config) -> list[tuple[bool, str]]:
    """``distill.*``: a teacher that exists, a known objective, students named once each; no model.init."""
    d = cfg.distill
    if not d.teacher:
        return [(not d.students, "distill.students is set but distill.teacher is not: name the teacher")]
    names = [student_name(m) for m in d.students]
    return [
        (Path(d.teacher).exists(), f"distill.teacher={d.teacher} not found: pass a dinolite run directory, "
                                   f"checkpoint or export, an official DINO checkpoint, or a weights file"),
        (d.objective in ("feature", "dino_head"), "distill.objective must be feature or dino_head"),
        (bool(d.students), "distill.students is empty: list at least one, e.g. distill.students=[{arch: resnet10t}]"),
        (len(set(names)) == len(names), f"distill.students gives two students the same name ({names}): "
                                        f"they are named by architecture and width; change one"),
        (not cfg.model.init, "model.init continues a DINO run; distillation trains new students: drop model.init"),
        *[(patch is None or min(cfg.augment.global_crops_size, cfg.augment.local_crops_size) >= patch,
           f"distill.students: {name} has patches of {patch} px, larger than the crops: give it patch_size")
          for name, patch in ((student_name(m), patch_size_of(m.arch, m.patch_size)) for m in d.students)],
    ]


def _span_checks(cfg: Config) -> list[tuple[bool, str]]:
    """Each warm-up / freeze span: non-negative, given in at most one of steps and fraction."""
    out = []
    spans = (("optim", "warmup", "warmup_epochs"), ("optim", "freeze_last_layer", "freeze_last_layer"),
             ("loss", "warmup_teacher_temp", "warmup_teacher_temp_epochs"))
    for section, name, epochs in spans:
        part = getattr(cfg, section)
        steps, fraction = getattr(part, f"{name}_steps"), getattr(part, f"{name}_fraction")
        out += [(getattr(part, epochs) >= 0, f"{section}.{epochs} must be >= 0"),
                (steps is None or fraction is None,
                 f"{section}.{name}_steps and {section}.{name}_fraction are both set: keep one"),
                (steps is None or steps >= 0, f"{section}.{name}_steps must be >= 0"),
                (fraction is None or 0 <= fraction <= 1, f"{section}.{name}_fraction must be in [0, 1]")]
    return out
