"""Image sources (decode to uint8 on CPU workers only) and the batch loaders that feed the device
(indexable sources, or webdataset shards streamed by ``shards.ShardLoader``). Every loader yields
``(images, hw, labels)`` batches; the protocol is in ``base``."""

from .base import Batch, EvalBatch, ImageSource, Source, TrainLoader
from .build import build_loader, build_source
from .loader import BatchLoader, eval_batches, eval_rows

__all__ = ["Batch", "EvalBatch", "ImageSource", "Source", "TrainLoader", "build_source", "build_loader", "BatchLoader",
           "eval_batches", "eval_rows"]
