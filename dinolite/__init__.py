"""dinolite: DINO self-supervised pretraining of timm ViTs with on-device multi-crop."""

import time as _time

__version__ = "0.1.0"
# When the package was first imported: a `dinolite pretrain` command's time budget counts from here,
# so the imports of torch and timm are inside the budget too.
STARTED = _time.time()


def load_backbone(path, checkpoint_key: str = "teacher"):
    """A pretrained timm ViT (eval mode) from a run directory, checkpoint, export or official DINO file."""
    from .weights import load_backbone as _load

    return _load(path, checkpoint_key)
