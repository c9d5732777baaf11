"""dinolite: DINO self-supervised pretraining of timm backbones with on-device multi-crop.

The building blocks are importable from here (loaded on first use, so ``dinolite --help`` stays fast)::

    from dinolite import MultiCrop, build_student_teacher, DINOLoss, DINOMethod, DINOTrainer, knn_accuracy
"""

import importlib as _importlib
import time as _time

__version__ = "0.1.0"
# When the package was first imported: a `dinolite pretrain` command's time budget counts from here,
# so the imports of torch and timm are inside the budget too.
STARTED = _time.time()

# public name -> module (relative to the package)
_API = {
    "MultiCrop": "maths.augment", "EvalTransform": "maths.augment", "AugmentConfig": "config",
    "ModelConfig": "config", "Config": "config", "load_config": "config",
    "DINOHead": "maths.models", "DINOModel": "maths.models", "build_student_teacher": "maths.models",
    "build_backbone": "maths.models", "ema_update": "maths.models",
    "DINOLoss": "maths.loss", "IBOTPatchLoss": "maths.loss", "dino_cross_entropy": "maths.loss",
    "sinkhorn_knopp": "maths.loss", "koleo_loss": "maths.loss", "teacher_stats": "maths.loss",
    "block_mask": "maths.masking", "sample_masks": "maths.masking",
    "cosine": "maths.schedules", "teacher_temperature": "maths.schedules", "scaled_lr": "maths.schedules",
    "knn_accuracy": "eval.knn", "knn_accuracies": "eval.knn",
    "DINOMethod": "methods.dino", "Schedule": "methods.dino", "DistillMethod": "methods.distill",
    "load_teacher": "methods.distill",
    "DINOTrainer": "pretraining.library", "pretrain": "pretraining.train", "Pretrainer": "pretraining.train",
    "FashionMNIST": "data.fashion_mnist", "ImageFolder": "data.folder",
    "export_backbone": "export", "resolve": "weights",
    "embed": "eval.embed",
}

__all__ = ["__version__", "load_backbone", *_API]


def load_backbone(path, checkpoint_key: str = "teacher"):
    """A pretrained timm backbone (eval mode) from a run directory, checkpoint, export or official DINO file."""
    from .weights import load_backbone as _load

    return _load(path, checkpoint_key)


def __getattr__(name: str):
    if name in _API:
        return getattr(_importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'dinolite' has no attribute {name!r}")
