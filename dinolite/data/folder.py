"""An image folder: one sub-folder per class (labels kept for evaluation), decoded by CPU workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from .base import ImageSource

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def decode_bounded(file, size: int, mode: str = "RGB") -> torch.Tensor:
    """Decode a path or binary file object to uint8 ``[C, H, W]`` with the longer side at most ``size``.

    ``mode`` is "RGB" (3 channels) or "L" (1 channel). JPEG ``draft`` mode lets the decoder skip
    detail it would throw away, which makes large photos several times cheaper to bound. The image
    folder and the shard stream both decode through here, so they bound images identically.
    """
    with Image.open(file) as im:
        im.draft(mode, (size, size))
        im = im.convert(mode)
        w, h = im.size
        scale = size / max(h, w)
        if scale < 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR, reducing_gap=3.0)
        arr = np.asarray(im)
        if arr.ndim == 2:  # "L" images come back without a channel axis
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def pad_batch(images: list[torch.Tensor], channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write each ``[C, h, w]`` image into the top-left of a zero ``[B, C, size, size]`` canvas; returns it and ``hw``."""
    out = torch.zeros(len(images), channels, size, size, dtype=torch.uint8)
    hw = torch.empty(len(images), 2, dtype=torch.int64)
    for row, img in enumerate(images):
        h, w = img.shape[-2:]
        out[row, :, :h, :w] = img
        hw[row, 0], hw[row, 1] = h, w
    return out, hw


class ImageFolder(ImageSource):
    """``root/<class>/<image>`` decoded to RGB uint8, longer side bounded to ``size``, zero-padded."""

    channels = 3

    def __init__(self, root: str, size: int = 256, subset: int = 0):
        path = Path(root)
        if not path.is_dir():
            raise UserError(f"image folder {path} not found: set data.root to a folder holding {path.name}/<class>/<images>")
        self.classes = sorted(p.name for p in path.iterdir() if p.is_dir())
        files, labels = [], []
        for label, name in enumerate(self.classes):
            for f in sorted((path / name).rglob("*")):
                if f.suffix.lower() in EXTENSIONS:
                    files.append(f)
                    labels.append(label)
        if not files:
            raise UserError(f"no images found under {path}/<class>/: expected files ending in {', '.join(sorted(EXTENSIONS))}")
        if subset:
            # Spread a subset over the classes instead of taking the first class only.
            keep = torch.linspace(0, len(files) - 1, min(subset, len(files))).round().long().unique().tolist()
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.size = size

    def load(self, index: int) -> torch.Tensor:
        try:
            return decode_bounded(self.files[index], self.size)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise UserError(f"cannot decode {self.files[index]}: {err}; remove or replace the file") from None

    def __getitems__(self, indices):
        images, hw = pad_batch([self.load(i) for i in indices], 3, self.size)
        return images, hw, self.labels[torch.as_tensor(indices, dtype=torch.int64)]
