"""The parts of an embedding: one rank's rows as it writes them (``PartWriter``), and rank 0 joining every rank's
part, in rank order, into ``features.npy`` and ``index.csv`` (see ``dinolite.eval.embed`` for the format).

Features go through memory maps whose disk blocks are reserved before the first row is written: on a full disk
the reservation fails as any write does (one line, ``WriteFailed``), where a page written through the map would
have killed the process with SIGBUS.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..files import allocate, sync_path, write_failure

HEADER = ("index", "path", "label")
COPY_BYTES = 64 << 20  # rank 0 joins the parts' features through blocks of this size


class PartWriter:
    """One rank's rows in ``folder``: features into ``<rank>.npy`` (a memmap of the share's size, opened at the
    first batch, when the feature size is known, its blocks reserved), names and labels into ``<rank>.csv``,
    the unreadable samples left out into ``<rank>.txt``; ``<rank>.json`` last."""

    def __init__(self, folder: Path, rank: int, capacity: int):
        self.npy, self.csv, self.meta, self.bad = (folder / f"{rank}.{ext}" for ext in ("npy", "csv", "json", "txt"))
        self.capacity, self.rows, self.dim, self.missing = capacity, 0, 0, 0
        self.left_out: list[tuple[str, str]] = []
        self.features: np.memmap | None = None
        self.file = open(self.csv, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)

    def skip(self, bad: list[tuple[str, str]], missing: int) -> None:
        """Samples left out of the rows: unreadable ones by name and reason, missing ones by count."""
        self.left_out += bad
        self.missing += missing

    def add(self, feats: torch.Tensor, labels: torch.Tensor, names: list[str]) -> None:
        if self.features is None:
            self.dim = feats.shape[1]
            self.features = reserved_memmap(self.npy, (self.capacity, self.dim))
        n = len(feats)
        if self.rows + n > self.capacity:  # the source gave more rows than it said it held
            raise RuntimeError(f"{self.rows + n} rows for a share of {self.capacity}")
        self.features[self.rows:self.rows + n] = feats.cpu().numpy()
        self.writer.writerows((name, "" if y < 0 else str(y)) for name, y in zip(names, labels.tolist(), strict=True))
        self.rows += n

    def close(self) -> None:
        """Everything on disk, then ``<rank>.json``: rows, dim, capacity and the samples left out."""
        with open(self.bad, "w", encoding="utf-8") as f:
            f.writelines(f"{name}\t{reason}\n" for name, reason in self.left_out)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.features is not None:
            self.features.flush()
            self.features = None
            sync_path(self.npy)
        self.meta.write_text(json.dumps({"rows": self.rows, "dim": self.dim, "capacity": self.capacity,
                                         "unreadable": len(self.left_out), "missing": self.missing}))

    def abort(self) -> None:
        self.file.close()
        self.features = None


def reserved_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A new float32 ``.npy`` of ``shape`` opened as a memmap, with its blocks reserved first: a disk too full
    for it fails here as a write does (``WriteFailed``), where a page written through the map would kill the
    process with SIGBUS."""
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    try:
        allocate(path)
    except OSError as err:
        del features
        path.unlink(missing_ok=True)
        raise write_failure(path, err) from None
    return features


def read_parts(parts: Path, world: int) -> list[dict]:
    """Every rank's ``<rank>.json``; a missing one means ``--out`` is not shared by the ranks."""
    found = []
    for r in range(world):
        try:
            found.append(json.loads((parts / f"{r}.json").read_text()))
        except FileNotFoundError:
            raise UserError(f"rank {r}'s part of the embedding is not in {parts}: --out must be on a file system "
                            f"shared by all ranks") from None
    return found


def join_features(parts: Path, meta: list[dict], out: Path) -> None:
    """The parts' features, in rank order, as one ``[N, D]`` file, copied block by block (or renamed when one
    whole part holds them all)."""
    full = [r for r, m in enumerate(meta) if m["rows"]]
    if len(full) == 1 and meta[full[0]]["rows"] == meta[full[0]]["capacity"]:
        os.replace(parts / f"{full[0]}.npy", out)
    else:
        count, dim = sum(m["rows"] for m in meta), max(m["dim"] for m in meta)
        features = reserved_memmap(out, (count, dim))
        block, row = max(1, COPY_BYTES // (4 * dim)), 0
        for r in full:
            src = np.load(parts / f"{r}.npy", mmap_mode="r")
            for lo in range(0, meta[r]["rows"], block):
                hi = min(lo + block, meta[r]["rows"])
                features[row + lo:row + hi] = src[lo:hi]
            row += meta[r]["rows"]
            del src
        features.flush()
        del features
    sync_path(out)


def join_index(parts: Path, world: int, out: Path) -> None:
    """The parts' names and labels, in rank order, as ``index,path,label`` rows under a header."""
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer, index = csv.writer(f), 0
        writer.writerow(HEADER)
        for r in range(world):
            with open(parts / f"{r}.csv", newline="", encoding="utf-8") as part:
                for name, label in csv.reader(part):
                    writer.writerow((index, name, label))
                    index += 1
        f.flush()
        os.fsync(f.fileno())
