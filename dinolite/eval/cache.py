"""Features computed once per (weights, data, transform, feature kind) and kept on disk.

A cache file is named after the weights file's SHA-256 and a hash of everything else that
determines the features, so a new checkpoint, another split or another transform never reuses
stale features, and the same command run twice reads them back instead of running the backbone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..export import write_safetensors


def cache_path(folder: Path, weights_hash: str, split: str, spec: dict) -> Path:
    """``folder/<split>-<weights hash>-<spec hash>.safetensors``."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(folder) / f"{split}-{weights_hash}-{digest}.safetensors"


def cached_features(path: Path | None, compute: Callable[[], tuple[Tensor, Tensor]],
                    device: torch.device, write: bool = True) -> tuple[Tensor, Tensor, bool]:
    """``(features, labels, was_cached)``: read ``path`` if it exists, else compute and (if ``write``) write it."""
    if path is not None and path.is_file():
        try:
            data = load_file(str(path))
            return data["features"].to(device), data["labels"].to(device), True
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed and replaced
            pass
    feats, labels = compute()
    if path is not None and write:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors({"features": feats, "labels": labels}, path)
    return feats, labels, False
