"""Image sources (decode to uint8 on CPU workers only) and the batch loader that feeds the device."""

from .base import ImageSource
from .build import build_source
from .loader import BatchLoader, eval_batches

__all__ = ["ImageSource", "build_source", "BatchLoader", "eval_batches"]
