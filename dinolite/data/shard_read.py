"""Read samples out of one tar shard with webdataset, tolerating damage, and decode them.

Damage never raises: a truncated or unreadable shard simply ends early (the samples it should
still have held are missing, and the callers count them against the manifest's sample count),
and an image that does not decode comes back as ``None`` (callers skip and count it).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from webdataset.tariterators import group_by_keys, tar_file_expander

from .folder import EXTENSIONS, decode_bounded

IMAGE_KEYS = {e.lstrip(".") for e in EXTENSIONS} | {"jpg", "tiff"}


@dataclass
class RawSample:
    """A sample as stored: still-encoded image bytes (cheap to hold in a shuffle buffer)."""

    key: str
    data: bytes | None  # None: the sample has no image file (e.g. cut off by truncation)
    label: int  # -1 when the sample carries no (readable) label


def _stop(_exn: Exception) -> bool:
    return False  # webdataset handler: end this shard at the first error, do not raise


def _raw(sample: dict) -> RawSample:
    data = next((sample[k] for k in sample if k in IMAGE_KEYS), None)
    try:
        label = int(sample["cls"]) if "cls" in sample else -1
    except ValueError:
        label = -1
    return RawSample(sample["__key__"], data, label)


def read_shard(path: Path, start: int = 0, stop: int | None = None) -> Iterator[RawSample]:
    """Samples ``[start, stop)`` of the shard, by position; fewer if the shard is damaged."""
    try:
        with open(path, "rb") as f:
            files = tar_file_expander([{"url": str(path), "stream": f}], handler=_stop, eof_value=None)
            for i, sample in enumerate(group_by_keys(files, handler=_stop)):
                if stop is not None and i >= stop:
                    return
                if i >= start:
                    yield _raw(sample)
    except Exception:  # noqa: BLE001 - a header cut mid-block raises from tarfile itself; the shard just ends
        return


def decode(raw: RawSample, size: int, channels: int) -> torch.Tensor | None:
    """uint8 ``[C, h, w]`` bounded to ``size``, or None when the bytes are not a decodable image."""
    if raw.data is None:
        return None
    try:
        return decode_bounded(io.BytesIO(raw.data), size, "L" if channels == 1 else "RGB")
    except Exception:  # noqa: BLE001 - PIL's decoders raise many types on corrupt data; all mean "skip it"
        return None
