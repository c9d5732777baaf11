"""Image sources (decode to uint8 on CPU workers only) and the batch loaders that feed the device
(indexable sources, or webdataset shards streamed by ``shards.ShardLoader``). Every loader yields
``(images, hw, labels)`` batches; the protocol is in ``base``."""

from .base import Batch, ImageSource, Source, TrainLoader
from .build import build_loader, build_source
from .loader import BatchLoader, eval_batches

__all__ = ["Batch", "ImageSource", "Source", "TrainLoader", "build_source", "build_loader", "BatchLoader",
           "eval_batches"]
