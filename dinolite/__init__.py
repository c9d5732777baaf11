"""dinolite: DINO self-supervised pretraining of timm ViTs with on-device multi-crop."""

__version__ = "0.1.0"


def load_backbone(path, checkpoint_key: str = "teacher"):
    """A pretrained timm ViT (eval mode) from a run directory, checkpoint, export or official DINO file."""
    from .weights import load_backbone as _load

    return _load(path, checkpoint_key)
