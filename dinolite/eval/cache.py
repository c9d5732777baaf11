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
from safetensors import safe_open
from safetensors.torch import load_file

from ..export import write_safetensors
from .features import Extracted


def cache_path(folder: Path, weights_hash: str, split: str, spec: dict) -> Path:
    """``folder/<split>-<weights hash>-<spec hash>.safetensors``."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(folder) / f"{split}-{weights_hash}-{digest}.safetensors"


def cached_features(path: Path | None, compute: Callable[[], Extracted], device: torch.device,
                    write: bool = True) -> tuple[Extracted, bool]:
    """``(features, was_cached)``: read ``path`` if it exists, else compute and (if ``write``) write it. The
    images left out as unreadable are kept in the file's metadata, so a cached result still names them."""
    if path is not None and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                left = json.loads((f.metadata() or {}).get("left_out", '{"unreadable": [], "missing": 0}'))
            data = load_file(str(path))
            return Extracted(data["features"].to(device), data["labels"].to(device),
                             [(str(n), str(r)) for n, r in left["unreadable"]], int(left["missing"])), True
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed and replaced
            pass
    got = compute()
    if path is not None and write:
        path.parent.mkdir(parents=True, exist_ok=True)
        left_out = json.dumps({"unreadable": got.unreadable, "missing": got.missing})
        write_safetensors({"features": got.features, "labels": got.labels}, path, {"left_out": left_out})
    return got, False
