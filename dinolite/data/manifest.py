"""The shard manifest: which tar shards make a split, how many samples each holds, and the image format.

``dinolite shards`` writes ``manifest.json`` next to the shards, after the last shard is complete.
Readers take their sample counts from it, so an epoch over shards has a known length before a
single byte of image data is read (schedules, progress bars and checkpoints need that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from webdataset.shardlists import expand_urls

from ..errors import UserError

MANIFEST = "manifest.json"
FORMAT = "dinolite-shards"
VERSION = 1


@dataclass
class ShardInfo:
    path: Path
    count: int  # samples the writer put in the shard
    size: int = 0  # bytes of the complete shard (0 = unknown)


@dataclass
class ShardList:
    """The resolved shards of one split plus what every sample in them looks like."""

    shards: list[ShardInfo]
    classes: list[str]
    channels: int = 3
    max_side: int = 0  # longest image side in the split (0 = unknown)
    spec: str = ""  # what the user wrote (for messages)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


def manifest_dict(shards: list[dict], classes: list[str], channels: int, max_side: int, source: str) -> dict:
    """The JSON written by ``dinolite shards``; ``shards`` holds ``{"name", "count", "bytes"}`` entries."""
    return {"format": FORMAT, "version": VERSION, "source": source, "channels": channels, "classes": classes,
            "max_side": max_side, "total": sum(s["count"] for s in shards), "shards": shards}


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Atomically (temp file, then rename) write ``directory/manifest.json``."""
    from ..files import write_text

    return write_text(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")


MIN_BYTES_PER_SAMPLE = 1024  # a tar member is a 512-byte header plus data padded to 512 bytes


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(data, path: Path) -> dict:
    """``data`` if it is a well-formed manifest, else a one-line UserError naming the field.

    Every field's type and range is checked, and every shard name must be a plain file name in the
    manifest's directory (no path elsewhere on the machine).
    """
    def bad(what: str) -> UserError:
        return UserError(f"shard manifest {path}: {what}; rewrite the shards with 'dinolite shards' "
                         f"(or check them with 'dinolite shards --verify {path.parent}')")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"not a dinolite shard manifest (no \"format\": \"{FORMAT}\")")
    if data.get("version", VERSION) != VERSION:
        raise bad(f"version {data.get('version')!r} is not {VERSION}")
    if data.get("channels", 3) not in (1, 3) or isinstance(data.get("channels"), bool):
        raise bad(f"'channels' must be 1 or 3, not {data.get('channels')!r}")
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' must be a list of class names")
    for key in ("max_side", "total"):
        if key in data and not _is_count(data[key]):
            raise bad(f"'{key}' must be an integer >= 0, not {data[key]!r}")
    shards = data.get("shards")
    if not isinstance(shards, list):
        raise bad("'shards' must be a list")
    for s in shards:
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not _is_count(s.get("count")):
            raise bad(f"every shard entry needs a 'name' and an integer 'count' >= 0 (got {str(s)[:80]})")
        if "bytes" in s and not _is_count(s["bytes"]):
            raise bad(f"shard {s['name']}: 'bytes' must be an integer >= 0, not {s['bytes']!r}")
        name = s["name"]
        if not name or Path(name).name != name or name in (".", ".."):
            raise bad(f"shard name {name!r} is not a file name in the manifest's directory")
    if "total" in data and data["total"] != sum(s["count"] for s in shards):
        raise bad(f"'total' {data['total']} is not the sum of the shards' counts ({sum(s['count'] for s in shards)})")
    return data


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"cannot read shard manifest {path}: {str(err).splitlines()[0]}; "
                        f"rewrite the shards with 'dinolite shards'") from None
    return check_manifest(data, path)


def resolve_shards(spec: str) -> ShardList:
    """Turn a directory, a manifest path, or a brace pattern into the list of shards it names.

    A pattern (``/data/train-{000000..000127}.tar``) selects shards listed in the
    ``manifest.json`` of their directory. Every named shard must exist: a missing shard or a
    pattern that names nothing is a :class:`UserError` here, before any training starts.
    """
    if not spec.strip():
        raise UserError("no shards given: set data.root (or data.eval_shards) to a shard directory, "
                        "its manifest.json, or a brace pattern such as /data/train-{000000..000127}.tar")
    path = Path(spec)
    if path.is_dir():
        manifest_path, names = path / MANIFEST, None
        if not manifest_path.is_file():
            raise UserError(f"{path} holds no {MANIFEST} (shard writing unfinished or interrupted?): "
                            f"write the shards with 'dinolite shards SOURCE --out {path}'")
    elif path.suffix == ".json":
        if not path.is_file():
            raise UserError(f"shard manifest {path} not found: check data.root / data.eval_shards")
        manifest_path, names = path, None
    else:
        expanded = [Path(p) for p in expand_urls(spec) if p]
        if not expanded:
            raise UserError(f"the shard pattern {spec!r} names no shards: fix the pattern")
        parents = {p.parent for p in expanded}
        if len(parents) != 1:
            raise UserError(f"the shard pattern {spec!r} spans several directories: give one directory's shards")
        manifest_path, names = parents.pop() / MANIFEST, [p.name for p in expanded]
        missing = [p for p in expanded if not p.is_file()]
        if missing:
            raise UserError(f"shard {missing[0]} is missing ({len(missing)} of the {len(expanded)} shards of "
                            f"{spec!r}): restore it, or name only the shards that exist")
        if not manifest_path.is_file():
            raise UserError(f"no {MANIFEST} beside the shards of {spec!r}: shards need the manifest that "
                            f"'dinolite shards' writes (it holds the sample counts)")
    data = _read_manifest(manifest_path)
    listed = {s["name"]: s for s in data["shards"]}
    if names is None:
        names = [s["name"] for s in data["shards"]]
    unknown = [n for n in names if n not in listed]
    if unknown:
        raise UserError(f"shard {unknown[0]} of {spec!r} is not listed in {manifest_path}: fix the pattern")
    if not names:
        raise UserError(f"{manifest_path} lists no shards: rewrite the shards with 'dinolite shards'")
    shards, warnings = [], []
    for name in names:
        info = ShardInfo(manifest_path.parent / name, listed[name]["count"], listed[name].get("bytes", 0))
        if not info.path.is_file():
            raise UserError(f"shard {info.path} is missing ({len(names)} shards in {spec!r}): restore it, "
                            f"or name only the shards that exist")
        on_disk = info.path.stat().st_size
        if info.count * MIN_BYTES_PER_SAMPLE > on_disk:
            raise UserError(f"{manifest_path} says shard {name} holds {info.count} samples, but the file has "
                            f"{on_disk} bytes: at most {on_disk // MIN_BYTES_PER_SAMPLE} fit. Fix the manifest "
                            f"(see 'dinolite shards --verify {manifest_path.parent}') or rewrite the shards")
        if info.size and on_disk < info.size:
            warnings.append(f"shard {info.path} is shorter than the manifest says (truncated?); "
                            f"its unreadable samples will be skipped and counted")
        shards.append(info)
    result = ShardList(shards, list(data.get("classes", [])), int(data.get("channels", 3)),
                       int(data.get("max_side", 0)), spec, warnings)
    if result.total == 0:
        raise UserError(f"the shards of {spec!r} hold no samples: rewrite them with 'dinolite shards'")
    return result
