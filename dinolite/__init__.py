"""dinolite: DINO self-supervised pretraining of timm ViTs with on-device multi-crop."""

__version__ = "0.1.0"
