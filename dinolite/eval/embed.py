"""The features of every image of a split, written as files that numpy, torch and pandas read without dinolite.

An embedding is a folder of three files:

* ``features.npy``: float32 ``[N, D]``, the CLS (ViT) or pooled (CNN) features of the evaluation view,
  the very features ``dinolite knn`` extracts (one code path: ``dinolite.eval.features``);
* ``index.csv``: RFC 4180 with a header ``index,path,label``, one row per feature row, in order. ``path`` is
  the image file (absolute), the sample key for shards, or ``fashion_mnist:<split>:<i>``; ``label`` is the
  class index, empty when the sample has none;
* ``embed.json``: where the features come from (weights, arch, dim, view, normalisation, data, count,
  classes, dinolite version), how many images were left out and where they are listed, and the ``identity``
  that tells whether a later command asks for the same embedding;
* ``unreadable.txt`` (only when some image could not be read): ``name<TAB>reason`` per image left out.

Every row is its own image: an unreadable file of a folder, or an undecodable sample of a shard, is left out of
``features.npy`` and ``index.csv`` (counted in ``embed.json`` and listed in ``unreadable.txt``), never replaced by
another image; samples a damaged shard no longer holds are counted (``missing``).

Memory stays bounded: each rank writes its rows batch by batch into a ``.npy`` memmap of its share
(``numpy.lib.format.open_memmap``, its blocks reserved first so a full disk is a one-line error, not a SIGBUS)
and a CSV, and rank 0 joins the parts block by block. Under torchrun/srun
each rank embeds a contiguous share of whole batches of an indexable source (so its batches, hence its features,
are those of one process), or a contiguous run of whole shards of a shard set, whose readable count is only known
once read. Everything is written into a hidden temporary folder beside ``out`` and renamed to ``out`` at the end:
a failure leaves no half-written embedding, and an existing folder is never overwritten by a different embedding.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import torch
from tqdm import tqdm

from ..data import Source, eval_rows
from ..errors import UserError
from ..files import WriteFailed, sync_path, write_failure
from .embed_parts import HEADER, PartWriter, join_features, join_index, read_parts
from .features import EvalSetup, batch_features, open_eval, open_split, rank_and_world, rank_rows

if TYPE_CHECKING:
    from ..data.shards import ShardSet

FORMAT = "dinolite-embedding"
VERSION = 1
FEATURES, INDEX, INFO, UNREADABLE = "features.npy", "index.csv", "embed.json", "unreadable.txt"

# (images, hw, labels, names, left out, missing): an evaluation batch's readable rows, what each is called in
# index.csv, (name, reason) of each unreadable sample left out, and how many a damaged shard no longer holds
NamedBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[tuple[str, str]], int]
T = TypeVar("T")


@dataclass
class Embedding:
    """What ``run_embed`` did: the folder, its row count and feature size, and whether it was already there."""

    path: Path
    count: int
    dim: int
    up_to_date: bool = False  # ``path`` already held this embedding: nothing was computed
    is_main: bool = True  # rank 0 (or the only process): the one that reports; the counts are 0 on the others


def embed(weights: str | Path, data: str | Sequence[str], out: str | Path, *, split: str = "train",
          checkpoint_key: str = "teacher", device: str = "auto", pos_interp: str = "auto",
          progress: bool = True) -> Path:
    """Embed every image of ``split`` of ``data`` with the backbone of ``weights``; returns the folder ``out``.

    ``weights``: a run directory, checkpoint, export or official DINO checkpoint (``dinolite.weights.resolve``).
    ``data``: ``--data`` items of ``dinolite knn`` (``"fashion_mnist"``, a shard directory, an image folder root,
    ``"root=/x"``, ``"eval.image_size=224"``, ...) on top of the weights' own settings; a string is one item,
    an empty list the weights' own data. Read the result with ``np.load(out / "features.npy")`` and the csv
    module (or pandas) on ``index.csv``. ``out`` must be new, empty, or hold this very embedding (then nothing
    is computed); a different embedding there is refused.
    """
    return run_embed(weights, data, out, split=split, checkpoint_key=checkpoint_key, device=device,
                     pos_interp=pos_interp, progress=progress).path


def run_embed(weights: str | Path, data: str | Sequence[str], out: str | Path, *, split: str = "train",
              checkpoint_key: str = "teacher", device: str = "auto", pos_interp: str = "auto",
              progress: bool = True) -> Embedding:
    """:func:`embed`, also telling the command line what it wrote. Every rank of a torchrun/srun launch calls it.

    Every check (the output folder, the weights, the ``--data`` items, the source) comes before anything is
    written, so bad input leaves the disk as it was.
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be train or test, not {split!r}")
    out = Path(out)
    existing = existing_embedding(out)
    items = [data] if isinstance(data, str) else list(data)
    s = open_eval(weights, checkpoint_key, items, device, pos_interp, progress)
    source = open_split(s, split)
    identity = embedding_identity(s, source, split)
    if existing is not None:
        if existing.get("identity") == identity:
            return Embedding(out, int(existing["count"]), int(existing["dim"]), True, s.is_main)
        changed = differences(existing.get("identity"), identity)
        raise UserError(f"--out {out} holds a different embedding (its {changed} differ): pass another --out, "
                        f"or delete {out} first")
    return write_embedding(s, source, split, identity, out)


def existing_embedding(out: Path) -> dict | None:
    """``out``'s ``embed.json`` when it holds an embedding, None when it is free (missing or an empty folder);
    a one-line UserError when it is a file or a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a new or empty folder")
    if not out.is_dir():
        return None
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return None
    try:
        info = json.loads((out / INFO).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not {FEATURES, INDEX} <= set(names):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(f"--out {out} holds other files ({shown}), not a dinolite embedding: pass a new or empty "
                        f"folder")
    return info


def embedding_identity(s: EvalSetup, source: Source, split: str) -> dict:
    """Everything that determines the rows (the weights' SHA-256, the data, the split, the view), as JSON values:
    equal identities mean the same embedding."""
    identity = {"weights_sha256": s.spec.fingerprint(), "pos_interp": s.spec.pos_interp,
                **s.cache_spec(split, "cls", len(source))}
    return json.loads(json.dumps(identity))


def differences(old, new: dict) -> str:
    """The keys in which two identities differ, for the refusal's message."""
    if not isinstance(old, dict):
        return "unreadable identity and the settings"
    return ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))) or "settings"


def sample_names(source: Source, split: str) -> Callable[[int], str] | None:
    """What index.csv calls row ``i`` of an indexable source: its file (absolute) or ``fashion_mnist:<split>:<i>``;
    None for a shard set (its samples carry their keys)."""
    from ..data.fashion_mnist import FashionMNIST
    from ..data.folder import ImageFolder
    from ..data.shards import ShardSet

    if isinstance(source, ShardSet):
        return None
    if isinstance(source, FashionMNIST):
        return lambda i: f"fashion_mnist:{split}:{i}"
    if isinstance(source, ImageFolder):
        files = source.files
        return lambda i: os.path.abspath(files[i])
    return lambda i: f"{split}:{i}"


def shard_share(source: ShardSet, rank: int, world: int) -> ShardSet:
    """Rank ``rank``'s contiguous run of whole shards of ``source``, balanced by the manifest's counts."""
    total, offset, mine = len(source), 0, []
    for info in source.infos:
        if min(offset * world // total, world - 1) == rank:
            mine.append(info)
        offset += info.count
    part = copy.copy(source)
    part.shard_list = dataclasses.replace(source.shard_list, shards=mine)
    return part


def shard_batches(source: ShardSet, batch_size: int, num_workers: int, pin_memory: bool) -> Iterator[NamedBatch]:
    """``source`` in shard order with each sample's key (``ShardSet.eval_rows``: the same decoding and batches as
    every evaluation; an unreadable sample is left out and named by its key)."""
    for b in source.eval_rows(batch_size, num_workers, pin_memory):
        yield b.images, b.hw, b.labels, list(b.rows), b.bad, b.missing


def rank_batches(source: Source, split: str, batch_size: int, num_workers: int,
                 pin_memory: bool) -> tuple[Iterator[NamedBatch], int, Source]:
    """This rank's named batches, its number of rows at most, and the source they come from."""
    from ..data.shards import ShardSet

    rank, world = rank_and_world()
    name = sample_names(source, split)
    if name is None:  # a shard set: whole shards per rank, in order
        shards = cast(ShardSet, source)
        part = shard_share(shards, rank, world) if world > 1 else shards
        return shard_batches(part, batch_size, num_workers, pin_memory), len(part), part
    rows, _ = rank_rows(len(source), rank, world, align=batch_size)
    batches = ((b.images, b.hw, b.labels, [name(i) for i in b.rows], b.bad, b.missing)
               for b in eval_rows(source, batch_size, num_workers, pin_memory, indices=rows))
    return batches, len(rows), source


def all_ranks(step: Callable[[], T], device: torch.device, where: Path, what: str) -> T:
    """``step()`` on this rank, then a collective check that it succeeded on every rank, so that no rank waits
    for one that failed. The failed rank raises its own error (a failed write as a one-line WriteFailed);
    the others a one-line UserError naming it."""
    from ..distributed import all_ranks_ok

    err: Exception | None = None
    try:
        result = step()
    except OSError as e:
        result, err = None, write_failure(where, e)
    except Exception as e:  # noqa: BLE001 - raised below, once the other ranks know
        result, err = None, e
    bad = all_ranks_ok(err is None, device)
    if err is not None:
        raise err
    if bad:
        raise UserError(f"rank(s) {bad} failed while {what} (their error is above); nothing was written")
    return cast(T, result)


def write_embedding(s: EvalSetup, source: Source, split: str, identity: dict, out: Path) -> Embedding:
    """Embed this rank's share into ``parts/`` of a temporary folder beside ``out``; rank 0 joins the parts
    and renames the folder to ``out``. The temporary folder is removed whatever happens."""
    from ..distributed import broadcast_str

    rank, world = rank_and_world()
    tmp = out.parent / f".{out.name}.tmp-{broadcast_str(secrets.token_hex(6))}"  # one folder for all ranks
    parts = tmp / "parts"
    try:
        all_ranks(lambda: parts.mkdir(parents=True) if s.is_main else None, s.device, tmp,
                  "creating the temporary folder")
        all_ranks(lambda: embed_share(s, source, split, parts, rank), s.device, parts, "embedding their share")

        def finish() -> Embedding | None:
            if not s.is_main:
                return None
            done = join_parts(s, source, split, identity, tmp, world)
            try:
                os.replace(tmp, out)  # onto a missing or empty folder; refused by the system if one filled it
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                return published_meanwhile(out, identity)
            sync_path(out.parent)
            return Embedding(out, *done)

        result = all_ranks(finish, s.device, out, "joining the parts")
        return result if result is not None else Embedding(out, 0, 0, False, False)
    except WriteFailed as err:  # named where the user looks (--out), not in the temporary folder, gone by now
        raise WriteFailed(str(err).replace(str(tmp), str(out))) from None
    finally:
        if s.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename


def published_meanwhile(out: Path, identity: dict) -> Embedding:
    """``out`` filled while this process embedded (a second process with the same ``--out``): fine when it holds
    this very embedding, a one-line refusal otherwise; either way its files are left as they are."""
    existing = existing_embedding(out)
    if existing is not None and existing.get("identity") == identity:
        return Embedding(out, int(existing["count"]), int(existing["dim"]), True)
    raise UserError(f"--out {out} was filled by another process with a different embedding while this one ran: "
                    f"pass another --out")


def embed_share(s: EvalSetup, source: Source, split: str, parts: Path, rank: int) -> None:
    """This rank's readable rows into ``parts/<rank>.*``; the unreadable samples it left out are listed in
    ``parts/<rank>.txt``."""
    batch = s.cfg.eval.batch_size
    batches, capacity, _ = rank_batches(source, split, batch, s.cfg.data.num_workers, s.device.type == "cuda")
    writer = PartWriter(parts, rank, capacity)
    was_training = s.backbone.training
    s.backbone.eval()
    try:
        for images, hw, labels, names, bad, missing in tqdm(batches, desc=f"embed {split}",
                                                            total=-(-capacity // batch), disable=not s.progress,
                                                            leave=False):
            writer.skip(bad, missing)
            if len(labels):
                writer.add(batch_features(s.backbone, s.transform, images, hw, s.device), labels, names)
    except BaseException:
        writer.abort()
        raise
    finally:
        s.backbone.train(was_training)
    writer.close()


def join_parts(s: EvalSetup, source: Source, split: str, identity: dict, tmp: Path, world: int) -> tuple[int, int]:
    """Rank 0: ``tmp/parts`` as features.npy, index.csv, embed.json (and unreadable.txt when an image folder had
    unreadable files), ``parts`` removed; returns ``(count, dim)``."""
    from .. import __version__

    parts = tmp / "parts"
    meta = read_parts(parts, world)
    count, dim = sum(m["rows"] for m in meta), max(m["dim"] for m in meta)
    if count == 0:
        raise UserError(f"no readable image in the {split} split of {s.cfg.data.root}: nothing to embed")
    join_features(parts, meta, tmp / FEATURES)
    join_index(parts, world, tmp / INDEX)
    unreadable = [line for r in range(world) for line in (parts / f"{r}.txt").read_text(encoding="utf-8").splitlines()]
    missing = sum(m["missing"] for m in meta)
    shutil.rmtree(parts)
    if unreadable:
        (tmp / UNREADABLE).write_text("".join(line + "\n" for line in unreadable), encoding="utf-8")
    if unreadable or missing:
        what = [f"{len(unreadable)} unreadable image(s) (listed in {UNREADABLE})"] if unreadable else []
        what += [f"{missing} sample(s) missing from damaged shards"] if missing else []
        print(f"warning: left out {' and '.join(what)} of the {split} split: {FEATURES} and {INDEX} hold the "
              f"{count} readable ones, each row its own image", file=sys.stderr, flush=True)
    e, a, spec = s.cfg.eval, s.cfg.augment, s.spec
    info = {"format": FORMAT, "version": VERSION, "dinolite_version": __version__,
            "model": {"source": str(Path(spec.source).absolute()), "kind": spec.kind, "checkpoint_key": s.key,
                      "arch": spec.arch, "timm_kwargs": spec.kwargs, "weights_sha256": identity["weights_sha256"]},
            "arch": spec.arch, "dim": dim, "count": count, "split": split,
            "image_size": e.image_size, "crop_ratio": e.crop_ratio,
            "normalisation": {"mean": list(a.mean), "std": list(a.std)},
            "data": identity["data"], "classes": list(source.classes),
            "left_out": len(unreadable) + missing, "unreadable": len(unreadable), "missing": missing,
            "unreadable_list": UNREADABLE if unreadable else None,
            "files": {"features": FEATURES, "index": INDEX, "columns": list(HEADER)},
            "identity": identity}
    (tmp / INFO).write_text(json.dumps(info, indent=1) + "\n")
    for name in (INFO, UNREADABLE) if unreadable else (INFO,):
        sync_path(tmp / name)
    sync_path(tmp)
    return count, dim
