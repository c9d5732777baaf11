"""Typed configuration: dataclasses checked by OmegaConf, one YAML per recipe, ``key=value`` overrides.

The dataclass defaults are the DINO paper's ViT-S/16 recipe (facebookresearch/dino, main_dino.py);
a recipe YAML only lists what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError
from .overrides import apply as apply_overrides
from .overrides import is_item
from .overrides import omegaconf_problem as _one_line
from .overrides import yaml_problem as _yaml_problem

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_RECIPE = "quickstart"


@dataclass
class DataConfig:
    source: str = "folder"  # "folder" (class sub-folders), "fashion_mnist" (idx files) or "shards" (webdataset)
    root: str = "data/imagenet"  # folder: holds train_dir/ and val_dir/; fashion_mnist: the idx files;
    # shards: the training shards (a directory, its manifest.json, or a brace pattern; see docs/data.md)
    train_dir: str = "train"
    val_dir: str = "val"
    decode_size: int = 256  # CPU workers bound the longer side to this many pixels (uint8 only)
    num_workers: int = 8
    subset: int = 0  # use only the first N training images (0 = all); for tests and quick looks
    test_subset: int = 0  # likewise for the evaluation split
    eval_shards: str = ""  # shards: the evaluation split's shards (same forms as root)
    shuffle_buffer: int = 1000  # shards: encoded samples each worker shuffles among
    # Undecodable images are skipped, counted and listed (bad_samples.txt in the run directory); a run stops
    # when more than this fraction of the images read so far is bad (the data are broken, not a few files).
    max_bad_fraction: float = 0.1


@dataclass
class AugmentConfig:
    global_crops_size: int = 224
    global_crops_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crops_number: int = 8
    local_crops_size: int = 96
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    # Gaussian blur probability on global view 1, global view 2, every local view.
    blur_p: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_p: float = 0.2  # global view 2 only
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class ModelConfig:
    arch: str = "vit_small_patch16_224"  # any timm ViT, or any timm CNN (resnet50, convnext_tiny, ...)
    patch_size: int | None = None  # ViT overrides of the timm architecture (None = timm's value)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    reg_tokens: int | None = None  # register tokens (Darcet et al. 2024); excluded from CLS and attention maps
    mlp_ratio: float | None = None  # ViT: MLP width over embed_dim (None = timm's)
    init_values: float | None = None  # ViT: layer scale's initial value (dinov2's 1e-5; None = timm's, no layer scale)
    no_embed_class: bool | None = None  # ViT: the class and register tokens get no position embedding (dinov2 + reg)
    drop_path_rate: float = 0.1  # student only; the teacher has none
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    # Continue pretraining from an earlier run: a dinolite run directory or checkpoint, or a full checkpoint of
    # the reference DINO code (student, teacher, dino_loss). Its student, teacher, heads and centers are taken;
    # the optimizer, the step and the schedules start afresh. "" = random initialisation.
    init: str = ""
    # model.init from a backbone alone (an export, a timm / DINOv2 / Hugging Face file, docs/reuse.md): the heads
    # start random, so they learn before they teach. None = the default for a backbone-only source (in brackets);
    # a full checkpoint (with heads) uses 0, 1, 1. The resolved values are saved in the run's config.yaml.
    init_head_warmup: float | None = None  # fraction of the run with the backbone frozen, heads learning (0.1)
    init_backbone_lr: float | None = None  # after it, the backbone's LR relative to the heads' (0.2)
    init_layer_decay: float | None = None  # and block i's LR times this ** (depth - i), as in fine-tuning (0.75)
    init_teacher_copy: bool = True  # at the unfreeze the teacher becomes a copy of the student (trained heads)
    init_recenter: bool = True  # and the center restarts from that step's teacher mean, not the stale EMA


@dataclass
class LossConfig:
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    # The teacher-temperature warm-up: in epochs, or in steps, or as a fraction of the run (one of the two
    # last, when set, replaces the epochs; see schedules.span_steps).
    warmup_teacher_temp_epochs: float = 0
    warmup_teacher_temp_steps: int | None = None
    warmup_teacher_temp_fraction: float | None = None
    center_momentum: float = 0.9
    # How the teacher is kept from collapsing: "center" (DINO: subtract an EMA of its mean output) or
    # "sinkhorn_knopp" (dinov2 / SwAV: targets with equal mass on every output dimension over the batch).
    centering: str = "center"
    sinkhorn_iterations: int = 3
    # KoLeo regulariser on the student's CLS features of each global crop (dinov2 uses 0.1); 0 = off.
    koleo_weight: float = 0.0
    # iBOT masked-patch loss (Zhou et al. 2022; dinov2 uses weight 1.0): the student's global crops get
    # block-wise masks, and its patch-head outputs at the masked patches learn the teacher's (unmasked)
    # outputs there, with their own center. 0 = off. ViTs only.
    ibot_weight: float = 0.0
    ibot_mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])  # of a masked crop's patches (dinov2)
    ibot_mask_probability: float = 0.5  # fraction of the global crops that are masked (dinov2)
    ibot_separate_head: bool = False  # a patch head of its own, or the DINO head shared (dinov2's default)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # "adamw" (DINO's ViTs) or "sgd" (momentum 0.9; DINO's ResNet-50 command)
    epochs: int = 100
    total_steps: int | None = None  # the run's length in steps, instead of epochs (a time budget sets it)
    batch_size: int = 1024  # the global batch, split equally over the processes; the LR rule scales with it
    lr: float = 0.0005  # peak LR for a global batch of 256 (linear scaling rule)
    min_lr: float = 1e-6
    # Durations come in three forms: epochs (the DINO recipes), steps, or a fraction of the run's steps;
    # a set ``*_steps`` or ``*_fraction`` replaces the epochs (at most one of the two).
    warmup_epochs: float = 10
    warmup_steps: int | None = None
    warmup_fraction: float | None = None
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables clipping
    freeze_last_layer: float = 1  # epochs during which the head's last layer gets no update
    freeze_last_layer_steps: int | None = None
    freeze_last_layer_fraction: float | None = None
    momentum_teacher: float = 0.996  # cosine schedule from this value to 1


@dataclass
class EngineConfig:
    """The ``train`` settings of the run engine (dinolite/engine/), the same keys for pretraining and fine-tuning.

    Both tasks' ``train`` sections inherit these; a new engine setting goes here (and, if it needs a range
    check, in ``checks.train_checks``) and nowhere else.
    """

    output_dir: str = ""  # the run directory (checkpoints, metrics, config.yaml, results)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when present), "cpu" or "cuda"
    threads: int = 0  # torch CPU threads (0 = torch's default)
    log_every: int = 20  # steps between metric lines (and host synchronisations)
    checkpoint_every_minutes: float = 10.0  # checked at log steps, so the ranks agree on when
    keep_checkpoints: int = 2
    # Stop (with a checkpoint) after this many steps of the whole command (born-again fine-tuning: over all its
    # generations); 0 = run to the end. Running the command again without it resumes.
    stop_after_steps: int = 0
    # Accept a resume with another schedule length (optim.epochs, optim.total_steps, optim.batch_size).
    resume_schedule_change: bool = False
    # Metrics always go to metrics.jsonl; "tensorboard" adds event files (<run>/tensorboard) and "wandb" a
    # Weights & Biases run (<run>/wandb), offline unless wandb_mode says "online".
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    wandb_project: str = "dinolite"
    wandb_mode: str = "offline"


@dataclass
class TrainConfig(EngineConfig):
    """Pretraining's ``train`` section: the engine's settings, then the time budget, collapse warning and compile."""

    output_dir: str = "runs/vit_small_imagenet"
    # Wall-clock budget of the whole command (training and the final k-NN), in minutes; 0 = none. The first
    # steps are timed on this machine and fix optim.total_steps, which is saved so a resume is exact.
    budget_minutes: float = 0.0
    collapse_patience: int = 5  # uniform collapse: bad log intervals of the last 2 * patience - 1 (monitor.py)
    compile: bool = False  # torch.compile the student and teacher backbones (one graph per crop size)


@dataclass
class EvalConfig:
    knn_at_end: bool = True
    knn_random_init: bool = True  # also score the same architecture at random initialisation
    knn_pixels: bool = False  # also score raw pixels (the evaluation view, flattened): the no-learning baseline
    # Online k-NN during training (labelled, indexable data: folder or fashion_mnist): every online_every steps
    # (0 = off; a multiple of train.log_every), online_bank training images as the bank, online_queries test images.
    online_every: int = 0
    online_bank: int = 5000
    online_queries: int = 1000
    knn_k: int = 20
    knn_temperature: float = 0.07
    image_size: int = 224  # evaluation crop: centre crop of crop_ratio of the shorter side, resized
    crop_ratio: float = 0.875
    batch_size: int = 256


@dataclass
class DistillConfig:
    """``dinolite distill``: a frozen teacher trains one or several students (``model.*`` is not used)."""

    # The teacher: a dinolite run directory, checkpoint or export, an official DINO checkpoint, or a weights file
    # of the timm architecture named by teacher_arch (.safetensors or a torch state dict).
    teacher: str = ""
    teacher_arch: str = ""  # the timm architecture of a bare weights file ("" = read from the file or run)
    # "feature": each student's features, through a linear projection, match the teacher's (cosine; any teacher);
    # "dino_head": each student's own DINO head learns the teacher head's centred distribution (a teacher with
    # a head: a dinolite run or checkpoint, or an official DINO full checkpoint).
    objective: str = "feature"
    # The students: timm architectures with ModelConfig's fields ({arch: resnet10t}, or a ViT with patch_size,
    # embed_dim, depth, num_heads, ...); the head fields size a student's DINO head (its out_dim is the teacher's).
    students: list[ModelConfig] = field(default_factory=list)


@dataclass
class Config:
    recipe: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def recipe_path(name_or_path: str | None) -> Path:
    """Resolve a recipe: a YAML path, or the name of a recipe shipped in configs/."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"config file {path} not found: pass --config PATH.yaml or one of: {known}")
    return path


def merge_recipe(schema: type, path: Path, overrides: list[str] | None, keys_hint: str):
    """``schema``'s defaults <- the YAML at ``path`` <- ``key=value`` overrides, as an OmegaConf object.

    Every failure is a one-line UserError; ``keys_hint`` says where the keys are documented.
    """
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({_yaml_problem(err)}): fix the recipe file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path} ({err}): pass a readable YAML recipe") from None
    if not isinstance(loaded, DictConfig):
        raise UserError(f"{path} holds a YAML {type(loaded).__name__.replace('Config', '').lower()}, not a mapping of "
                        f"sections (data:, model:, ...): fix the recipe file")
    try:
        cfg = cast(DictConfig, OmegaConf.merge(OmegaConf.structured(schema), loaded))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {_one_line(err)}; fix the recipe file (is it a {schema.__name__} recipe?)") from None
    cfg = apply_overrides(cfg, overrides or [], "override", keys_hint, "optim.epochs=10")
    if cfg.recipe == "custom":
        cfg.recipe = path.stem
    return cfg


def load_config(config: str | None = None, overrides: list[str] | None = None, *,
                command_line: bool = False) -> Config:
    """Defaults <- recipe YAML <- ``key=value`` overrides, type-checked, as a plain dataclass.

    ``command_line``: the overrides are what a user typed (``dinolite pretrain``, ``DINOTrainer``, the SLURM
    launcher), so a typed run length wins over the recipe's (:func:`load_command_config`). Without it the
    overrides are merged as they are, which is what code that sets a budget and epochs together relies on.
    """
    if command_line:
        return load_command_config(config, overrides)[0]
    out = cast(Config, OmegaConf.to_object(merge_recipe(Config, recipe_path(config), overrides, "configs/*.yaml")))
    validate(out)
    return out


def load_command_config(config: str | None, overrides: list[str] | None, *,
                        distill: bool = False) -> tuple[Config, str]:
    """The config a command line asks for, and the start banner's note on its run length ("" when the recipe's
    stands): the one place the run-length rule (:func:`command_line_length`) is applied, before the checks, for
    every front end (``dinolite pretrain`` / ``distill``, ``DINOTrainer``, ``launch.slurm``). ``distill``: a
    distillation recipe (default distill_fmnist), which must name a teacher."""
    recipe = config or ("distill_fmnist" if distill else None)
    out = cast(Config, OmegaConf.to_object(merge_recipe(Config, recipe_path(recipe), overrides, "configs/*.yaml")))
    note = command_line_length(out, overrides)
    validate(out)
    if distill:
        _needs_teacher(out)
    return out, note


BUDGET_KEY = "train.budget_minutes"


def typed_values(overrides: list[str] | None) -> dict[str, object]:
    """The dotted keys that ``key=value`` items set, with their values; a mapping value sets each key inside
    it (``optim={epochs: 10}`` sets ``optim.epochs``). Items that are not ``key=value`` are left out (the
    override grammar refuses them before this is asked)."""
    found: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            found[prefix] = value

    for item in overrides or []:
        if is_item(item):
            walk("", OmegaConf.to_container(OmegaConf.from_dotlist([item])))
    return found


def command_line_length(cfg: Config, overrides: list[str] | None) -> str:
    """What the user typed wins over the recipe's run length; returns the start banner's note ("" when the
    recipe's own length stands). ``cfg`` is the config loaded with ``overrides``; it is changed in place,
    before anything is built or written.

    A run's length is a time budget (``train.budget_minutes`` > 0, which fixes ``optim.total_steps`` when the
    run starts), else ``optim.total_steps``, else ``optim.epochs``. A recipe with a budget (the quickstart's
    10 minutes) would silently replace an ``optim.epochs`` or ``optim.total_steps`` typed in ``overrides``,
    so a typed length drops the recipe's budget (and a typed ``optim.epochs`` the recipe's
    ``optim.total_steps``). A typed budget > 0 beside a typed length is a UserError naming both: the two
    ask for different runs and only the user knows which one is meant. A resume passes the same overrides,
    so it resolves to the same length (a budget run keeps the step count it saved: runplan.resumed_budget_plan).
    """
    typed = typed_values(overrides)
    steps_typed = typed.get("optim.total_steps") is not None  # optim.total_steps=null sets no length
    if not steps_typed and "optim.epochs" not in typed:
        return ""
    o, t = cfg.optim, cfg.train
    length = f"optim.total_steps={o.total_steps}" if steps_typed else f"optim.epochs={o.epochs}"
    if BUDGET_KEY in typed and t.budget_minutes > 0:
        raise UserError(f"{BUDGET_KEY}={t.budget_minutes:g} and {length} are both on the command line: a run's "
                        f"length is a time budget or a step count, not both; keep one of the two")
    dropped = []
    if t.budget_minutes > 0:  # not typed (a typed one is 0 here): the recipe's
        dropped.append(f"{BUDGET_KEY}={t.budget_minutes:g}")
        t.budget_minutes = 0.0
    if not steps_typed and o.total_steps is not None:  # optim.epochs typed, the recipe's step count would win
        dropped.append(f"optim.total_steps={o.total_steps}")
        o.total_steps = None
    if not dropped:
        return ""
    verb = "is" if len(dropped) == 1 else "are"
    return f"run length: {length} from the command line (the recipe's {' and '.join(dropped)} {verb} not used)"


def load_distill_config(config: str | None = None, overrides: list[str] | None = None, *,
                        command_line: bool = False) -> Config:
    """A distillation recipe (default: distill_fmnist) with its overrides; one naming no teacher is refused."""
    if command_line:
        return load_command_config(config, overrides, distill=True)[0]
    cfg = load_config(config or "distill_fmnist", overrides)
    _needs_teacher(cfg)
    return cfg


def _needs_teacher(cfg: Config) -> None:
    if not cfg.distill.teacher:
        raise UserError("dinolite distill needs a teacher: pass --teacher RUN_OR_CHECKPOINT (or distill.teacher=...)")


def validate(cfg: Config) -> None:
    """Every key's range, and what types alone cannot express; each failure names the key and the fix.

    Run before anything is built or written, so a bad value never costs a run directory or a training.
    """
    from .checks import at_least, data_checks, finite, patch_size_of, positive, probability, train_checks

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
        at_least("optim.weight_decay", o.weight_decay, 0),
        at_least("optim.weight_decay_end", o.weight_decay_end, 0),
        at_least("optim.clip_grad", o.clip_grad, 0, " (0 = no clipping)"),
        probability("optim.momentum_teacher", o.momentum_teacher),
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
    from .checks import patch_size_of

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


def student_name(m: ModelConfig) -> str:
    """A student's name in metrics and exports: its architecture, with the width and depth a ViT overrides."""
    name = m.arch.split(".")[0]
    for key, short in (("embed_dim", "w"), ("depth", "d")):
        if getattr(m, key) is not None:
            name += f"-{short}{getattr(m, key)}"
    return name


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


def as_dict(cfg) -> dict:
    """A config dataclass (or one of its sections) as plain containers (checkpoints, JSON and loggers
    hold no dataclasses)."""
    return cast(dict, OmegaConf.to_container(OmegaConf.structured(cfg)))


def save_config(cfg, path: Path) -> None:
    """A resolved config (any of the config dataclasses) as YAML, written to a temporary name and renamed."""
    from .files import write_text

    write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def read_saved_config(path: Path, schema: type | None = None):
    """Load a run directory's resolved config.yaml (written by :func:`save_config`) as ``schema`` (default Config)."""
    schema = schema or Config
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {_one_line(err)}; the run directory's config is not a {schema.__name__}") from None
    return OmegaConf.to_object(merged)
