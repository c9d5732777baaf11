"""The configuration's schema: one dataclass per section, checked by OmegaConf (recipes and overrides are
loaded in config.py, their values checked in checks.py).

The dataclass defaults are the DINO paper's ViT-S/16 recipe (facebookresearch/dino, main_dino.py);
a recipe YAML only lists what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    # "cosine" (DINO: a half-cosine from the peak after the warm-up) or "wsd" (the peak held, then a half-cosine
    # over the last lr_decay_fraction of the run); weight decay and teacher momentum follow a cosine either way
    lr_schedule: str = "cosine"
    lr_decay_fraction: float = 0.2
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
    momentum_teacher: float = 0.996  # cosine schedule from this value to momentum_teacher_end
    momentum_teacher_end: float = 1.0  # DINO's 1; equal to momentum_teacher: constant (dinov3 keeps 0.994)


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
    # The step's arithmetic (precision.py): "auto" bf16 autocast on CUDA, float32 on a CPU; "fastest" as auto,
    # but a CPU with native bf16 times a few steps both ways and keeps the faster; "fp32" or "bf16" forced.
    precision: str = "auto"


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


def student_name(m: ModelConfig) -> str:
    """A student's name in metrics and exports: its architecture, with the width and depth a ViT overrides."""
    name = m.arch.split(".")[0]
    for key, short in (("embed_dim", "w"), ("depth", "d")):
        if getattr(m, key) is not None:
            name += f"-{short}{getattr(m, key)}"
    return name
