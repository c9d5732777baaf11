"""Fashion-MNIST read from its idx files (Debian package dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import ImageSource

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
_FILES = {"train": "train-{}-idx{}-ubyte", "test": "t10k-{}-idx{}-ubyte"}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (gzip or plain): big-endian dims after a magic of 0, 0, dtype, ndim."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not a uint8 idx file: reinstall it with "
                        f"apt-get install --reinstall dataset-fashion-mnist")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: reinstall it with apt-get install --reinstall dataset-fashion-mnist")
    return data.reshape(tuple(dims))


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(
        f"Fashion-MNIST not found: {root / (stem + '.gz')} is missing; install it with "
        f"'apt-get install dataset-fashion-mnist' or set data.root to the folder holding the idx files"
    )


class FashionMNIST(ImageSource):
    """The 60,000 training or 10,000 test images, 1 x 28 x 28 uint8, held in memory."""

    channels = 1
    size = 28
    classes = CLASSES

    def __init__(self, root: str = DEFAULT_ROOT, split: str = "train", subset: int = 0):
        if split not in _FILES:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        root_path = Path(root)
        images = _read_idx(_find(root_path, _FILES[split].format("images", 3)))
        labels = _read_idx(_find(root_path, _FILES[split].format("labels", 1)))
        if subset:
            images, labels = images[:subset], labels[:subset]
        self.images = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28]
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.hw = torch.full((len(self.labels), 2), 28, dtype=torch.int64)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx], self.hw[idx], self.labels[idx]
