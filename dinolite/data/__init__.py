"""Image sources (decode to uint8 on CPU workers only) and the batch loaders that feed the device
(indexable sources, or webdataset shards streamed by ``shards.ShardLoader``)."""

from .base import ImageSource
from .build import build_loader, build_source
from .loader import BatchLoader, eval_batches

__all__ = ["ImageSource", "build_source", "build_loader", "BatchLoader", "eval_batches"]
