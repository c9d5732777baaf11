"""Typed fine-tuning config: a ``FinetuneConfig`` dataclass checked by OmegaConf, a YAML recipe,
``key=value`` overrides.

The data section is pretraining's ``DataConfig`` (same sources: image folder, Fashion-MNIST, shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import DataConfig, EngineConfig

DEFAULT_RECIPE = "finetune_fmnist"


@dataclass
class FTAugmentConfig:
    image_size: int = 0  # training and evaluation size in pixels; 0 = the backbone's pretraining size
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    flip_p: float = 0.5
    jitter_p: float = 0.0  # colour jitter probability (0 = off)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    mean: list[float] = field(default_factory=list)  # [] = the pretraining run's, else ImageNet's
    std: list[float] = field(default_factory=list)
    crop_ratio: float = 1.0  # evaluation: centre square of this fraction of the shorter side


@dataclass
class FTModelConfig:
    drop_path_rate: float = 0.1  # the student's; teachers run without
    head_init_std: float = 0.02  # new classifier weights ~ truncated N(0, std), biases 0
    timm_pretrained: bool = True  # --init timm:NAME: timm's pretrained weights (false: random init)
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs for timm:NAME


@dataclass
class FTOptimConfig:
    epochs: int = 10
    batch_size: int = 64  # the global batch, split equally over the processes; the LR rule scales with it
    lr: float = 0.0005  # peak LR for a global batch of 256 (linear scaling rule)
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # LR of block i is lr * layer_decay ** (depth + 1 - i); 1 = off
    label_smoothing: float = 0.0
    clip_grad: float = 3.0  # 0 disables clipping


@dataclass
class BornAgainConfig:
    generations: int = 2  # G, generation 0 (supervised) included
    alpha: float = 0.5  # weight of the label CE; 1 - alpha goes to the distillation term
    temperature: float = 2.0
    teacher: str = ""  # optional: a finished supervised fine-tuning run (or its model file) used as generation 0


@dataclass
class LayerwiseConfig:
    exits: list[int] = field(default_factory=list)  # blocks (1..depth-1) carrying an exit; [] = 1/4, 1/2, 3/4 of depth
    temperature: float = 3.0
    kd_weight: float = 1.0  # weight of each shallow exit's KL to the final exit
    hint_weight: float = 0.0  # weight of the feature hint (0 = off)
    thresholds: list[float] = field(default_factory=lambda: [0.8, 0.9, 0.95])  # early-exit confidence thresholds


@dataclass
class ConsistencyConfig:
    weight: float = 1.0  # lambda
    temperature: float = 1.0
    strength: float = 1.0  # 0 = aug(x) is x; 1 = crop scale [0.4, 1] and colour jitter 0.5


@dataclass
class FTTrainConfig(EngineConfig):
    """Fine-tuning's ``train`` section: the engine's settings (no others of its own)."""

    output_dir: str = ""  # "" = runs/<recipe>-<method>


@dataclass
class FTEvalConfig:
    batch_size: int = 256
    every_epochs: int = 1  # test-split evaluation interval (the last epoch is always evaluated)


@dataclass
class FinetuneConfig:
    recipe: str = "custom"
    method: str = "supervised"
    init: str = ""  # run directory, checkpoint, export, .safetensors, or timm:NAME
    data: DataConfig = field(default_factory=DataConfig)
    augment: FTAugmentConfig = field(default_factory=FTAugmentConfig)
    model: FTModelConfig = field(default_factory=FTModelConfig)
    optim: FTOptimConfig = field(default_factory=FTOptimConfig)
    born_again: BornAgainConfig = field(default_factory=BornAgainConfig)
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    train: FTTrainConfig = field(default_factory=FTTrainConfig)
    eval: FTEvalConfig = field(default_factory=FTEvalConfig)
