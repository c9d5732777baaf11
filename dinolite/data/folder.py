"""An image folder: one sub-folder per class (labels kept for evaluation), decoded by CPU workers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import UserError
from .base import EvalItems, ImageSource

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as browsers show them


def _eight_bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images as 8-bit grayscale, scaled by their range.

    Integer images by their type's range (0-65535 for 16 bits); float images by [0, 1] when their
    values lie there, else by their own minimum and maximum. A plain ``convert("L")`` would clip
    them (a 16-bit scan comes out nearly all white, a [0, 1] float image all black).
    """
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = (0.0, 1.0) if np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1 else (np.nanmin(arr), np.nanmax(arr))
    else:  # "I;16*" and "I" (which PIL also uses for 16-bit PNGs)
        lo = min(0.0, float(np.nanmin(arr)))
        hi = 65535.0 if np.nanmax(arr) <= 65535 else float(2**31 - 1)
    scaled = np.nan_to_num((arr - lo) / max(hi - lo, 1e-12)).clip(0, 1)
    return Image.fromarray((scaled * 255 + 0.5).astype(np.uint8), mode="L")


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """``im`` as "RGB" or "L" showing what a viewer shows: high bit depths scaled, transparency composited
    on a fixed background, palettes and CMYK converted."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _eight_bit(im)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return im.convert(mode)


def decode_bounded(file, size: int, mode: str = "RGB") -> torch.Tensor:
    """Decode a path or binary file object to uint8 ``[C, H, W]`` with the longer side at most ``size``.

    ``mode`` is "RGB" (3 channels) or "L" (1 channel). JPEG ``draft`` mode lets the decoder skip
    detail it would throw away, which makes large photos several times cheaper to bound. The EXIF
    orientation is applied (a phone photo stands upright). The image folder and the shard stream both
    decode through here, so they bound images identically.
    """
    with Image.open(file) as im:
        if im.mode in ("RGB", "L", "CMYK", "YCbCr"):
            im.draft(mode, (size, size))
        im = to_mode(ImageOps.exif_transpose(im), mode)
        w, h = im.size
        scale = size / max(h, w)
        if scale < 1:
            target = (max(1, round(w * scale)), max(1, round(h * scale)))
            im = im.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
        arr = np.asarray(im)
        if arr.ndim == 2:  # "L" images come back without a channel axis
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def pad_batch(images: list[torch.Tensor], channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write each ``[C, h, w]`` image into the top-left of a zero ``[B, C, size, size]`` canvas; returns it and
    ``hw``."""
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
            raise UserError(f"image folder {path} not found: set data.root to a folder holding "
                            f"{path.name}/<class>/<images>")
        self.classes = sorted(p.name for p in path.iterdir() if p.is_dir())
        files, labels = [], []
        for label, name in enumerate(self.classes):
            for f in sorted((path / name).rglob("*")):
                if f.suffix.lower() in EXTENSIONS:
                    files.append(f)
                    labels.append(label)
        if not files:
            raise UserError(f"no images found under {path}/<class>/: expected files ending in "
                            f"{', '.join(sorted(EXTENSIONS))}")
        if subset:
            # Spread a subset over the classes instead of taking the first class only.
            keep = torch.linspace(0, len(files) - 1, min(subset, len(files))).round().long().unique().tolist()
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.size = size
        self.bad_log: Path | None = None  # where bad files are listed (the run directory's bad_samples.txt)
        self.bad_seen: set[Path] = set()  # this process's bad files (each is recorded once per process)

    def decode(self, index: int) -> torch.Tensor | str:
        """The image, or why it cannot be used (undecodable, truncated, empty, over PIL's pixel limit)."""
        try:
            return decode_bounded(self.files[index], self.size)
        except Exception as err:  # noqa: BLE001 - PIL fails on broken files with many exception types
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The image at ``index`` or, when it is bad, at the next good index (so batches keep their size);
        each bad file is recorded (``bad_log``, one line per file) and counted by the loader."""
        for step in range(len(self.files)):
            i = (index + step) % len(self.files)
            image = self.decode(i)
            if not isinstance(image, str):
                return image, i
            self.record_bad(self.files[i], image)
        raise UserError(f"no image under {self.files[0].parent.parent} can be decoded: check data.root")

    def record_bad(self, path: Path, reason: str) -> None:
        if path in self.bad_seen:
            return
        self.bad_seen.add(path)
        if self.bad_log is not None:
            if str(path) in read_bad_log(self.bad_log):  # listed by another worker, rank or epoch already
                return
            # One short line per write with O_APPEND: DataLoader workers and ranks can share the file.
            fd = os.open(self.bad_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{path}\t{reason}\n".encode())
            finally:
                os.close(fd)
        else:
            warnings.warn(f"skipped undecodable image {path} ({reason})", stacklevel=2)

    def eval_items(self, indices: list[int]) -> EvalItems:
        """The readable images of ``indices`` only (evaluation: a row stands for its file, so a bad file is left
        out, never replaced), their indices, and ``(path, reason)`` of each one left out (also recorded in
        ``bad_log`` when one is set, as in training)."""
        kept, images, bad = [], [], []
        for i in indices:
            image = self.decode(i)
            if isinstance(image, str):
                bad.append((str(os.path.abspath(self.files[i])), image))
                if self.bad_log is not None:
                    self.record_bad(self.files[i], image)
            else:
                kept.append(i)
                images.append(image)
        batch, hw = pad_batch(images, 3, self.size)
        return batch, hw, self.labels[torch.as_tensor(kept, dtype=torch.int64)], kept, bad

    def __getitems__(self, indices):
        loaded = [self.load(i) for i in indices]
        images, hw = pad_batch([img for img, _ in loaded], 3, self.size)
        return images, hw, self.labels[torch.as_tensor([i for _, i in loaded], dtype=torch.int64)]


def read_bad_log(path: Path | None) -> dict[str, str]:
    """File -> reason of every bad image recorded in ``path`` (empty when there is none)."""
    if path is None or not Path(path).is_file():
        return {}
    out: dict[str, str] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        name, _, reason = line.partition("\t")
        out.setdefault(name, reason)
    return out
