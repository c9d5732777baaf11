"""Write a labelled image set as webdataset tar shards plus a manifest.

Each sample is ``<key>.cls`` (the class index as text) and ``<key>.<ext>`` (the encoded image:
PNG for Fashion-MNIST, the original file's bytes for an image folder). Keys are the sample's
zero-padded position in the source's sorted order, so the same source always gives the same keys
and, with the fixed mtime, byte-identical shards.

Crash safety: a shard is written under a hidden temporary name and renamed to ``<prefix>-NNNNNN.tar``
only once complete, and ``manifest.json`` is written last, so an interrupted run leaves no file
that looks like a complete shard and no manifest that a reader would accept.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from webdataset import TarWriter

from ..errors import UserError
from .manifest import MANIFEST, manifest_dict, write_manifest

BLOCK = 512  # tar block: every member takes a header block plus its data rounded up to blocks


@dataclass
class Sample:
    key: str
    ext: str  # "png", "jpg", ...
    data: bytes
    label: int
    side: int  # longer image side in pixels


@dataclass
class SampleSource:
    """What a shard writer needs from a source: its samples in a stable order and its metadata."""

    samples: Iterable[Sample]
    classes: list[str]
    channels: int
    description: str
    left_out: list[str]  # files that could not be read and were not written


def _member_bytes(sample: Sample) -> int:
    return sum(BLOCK + -(-n // BLOCK) * BLOCK for n in (len(sample.data), len(str(sample.label))))


class _ShardFile:
    """One shard being written under a temporary name; ``finish`` renames it to its final name."""

    def __init__(self, final: Path):
        self.final, self.tmp = final, final.with_name(f".{final.name}.tmp")
        self.file = open(self.tmp, "wb")
        self.writer = TarWriter(self.file, mtime=0)  # fixed mtime: the same input gives identical bytes
        self.count = self.bytes = 0

    def write(self, sample: Sample) -> None:
        self.writer.write({"__key__": sample.key, sample.ext: sample.data, "cls": sample.label})
        self.count += 1
        self.bytes += _member_bytes(sample)

    def finish(self) -> dict:
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())  # the rename must not become visible before the data
        self.file.close()
        os.replace(self.tmp, self.final)
        return {"name": self.final.name, "count": self.count, "bytes": self.final.stat().st_size}

    def abandon(self) -> None:
        try:
            self.writer.close()  # flushes tarfile's buffer now, not into a closed file at garbage collection
        except OSError:
            pass  # the disk may be why we stopped; the file goes anyway
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def check_out_dir(out: Path, prefix: str) -> None:
    """Refuse a directory that already holds a manifest or shards of this prefix (never overwrite data)."""
    if (out / MANIFEST).exists() or any(out.glob(f"{prefix}-*.tar")):
        raise UserError(f"{out} already holds shards ({MANIFEST} or {prefix}-*.tar, maybe from an interrupted "
                        f"run): choose another --out or delete them")


def write_shards(source: SampleSource, out: Path, prefix: str, max_count: int, max_size: int,
                 progress: bool = False, total: int | None = None) -> dict:
    """Write all samples into shards of at most ``max_count`` samples and about ``max_size`` bytes.

    A shard is closed before a sample that would take it past either limit (a single sample larger
    than ``max_size`` gets a shard of its own). Returns the manifest, written last.
    """
    if max_count < 1 or max_size < 1:
        raise UserError("--max-count and --max-size must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    check_out_dir(out, prefix)
    shards: list[dict] = []
    current: _ShardFile | None = None
    max_side = 0
    from tqdm import tqdm

    try:
        for sample in tqdm(source.samples, desc="shards", unit="img", total=total, disable=not progress):
            if current is not None and (current.count >= max_count
                                        or current.bytes + _member_bytes(sample) + 2 * BLOCK > max_size):
                shards.append(current.finish())
                current = None
            if current is None:
                current = _ShardFile(out / f"{prefix}-{len(shards):06d}.tar")
            current.write(sample)
            max_side = max(max_side, sample.side)
        if current is not None:
            shards.append(current.finish())
            current = None
    finally:
        if current is not None:  # interrupted: the unfinished shard keeps its temporary name, then goes
            current.abandon()
    if not shards:
        raise UserError(f"{source.description} holds no readable images: nothing to write")
    manifest = manifest_dict(shards, source.classes, source.channels, max_side, source.description)
    write_manifest(out, manifest)
    return manifest


# ---- sources ---------------------------------------------------------------------------------

def fashion_mnist_samples(root: str, split: str, subset: int) -> SampleSource:
    """Fashion-MNIST images encoded as 1-channel PNG (lossless: decoding gives the idx pixels back)."""
    from .fashion_mnist import CLASSES, FashionMNIST

    data = FashionMNIST(root, split=split, subset=subset)

    def gen() -> Iterator[Sample]:
        for i in range(len(data)):
            buf = io.BytesIO()
            Image.fromarray(data.images[i, 0].numpy()).save(buf, format="PNG", optimize=False)
            yield Sample(f"{split}_{i:08d}", "png", buf.getvalue(), int(data.labels[i]), 28)

    return SampleSource(gen(), list(CLASSES), 1, f"fashion_mnist:{root} split={split}", [])


_EXT = {".jpeg": "jpg", ".tif": "tiff"}  # one spelling per format inside the shards


def folder_samples(root: str, subset: int) -> SampleSource:
    """An image folder's files, bytes unchanged (no re-encoding loss); unreadable files are left out."""
    from .folder import ImageFolder

    folder = ImageFolder(root, subset=subset)
    left_out: list[str] = []

    def gen() -> Iterator[Sample]:
        for i, (path, label) in enumerate(zip(folder.files, folder.labels.tolist(), strict=True)):
            try:
                with Image.open(path) as im:  # reads the header only: size, and a check that it is an image
                    side = max(im.size)
                data = path.read_bytes()
            except Exception as err:  # noqa: BLE001 - any decoder failure means "not an image we can use"
                left_out.append(f"{path}: {err}")
                continue
            ext = _EXT.get(path.suffix.lower(), path.suffix.lower().lstrip("."))
            yield Sample(f"{i:09d}", ext, data, label, side)

    return SampleSource(gen(), folder.classes, 3, f"folder:{root}", left_out)

