"""``dinolite shards --verify``: read every shard of a manifest and compare what is there with what it lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from .manifest import MANIFEST, check_manifest
from .shard_read import decode, read_shard


@dataclass
class ShardReport:
    name: str
    listed: int  # samples the manifest says the shard holds
    found: int  # samples read from the file
    undecodable: int  # of those, images that do not decode
    missing_file: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing_file and self.found == self.listed and self.undecodable == 0


def verify_shards(directory: str | Path, progress: bool = True) -> list[ShardReport]:
    """One report per shard listed in ``directory/manifest.json``, every sample read and decoded."""
    directory = Path(directory)
    path = directory / MANIFEST if directory.is_dir() else directory
    if not path.is_file():
        raise UserError(f"{path} not found: pass the shard directory written by 'dinolite shards'")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"cannot read shard manifest {path}: {str(err).splitlines()[0]}") from None
    data = check_manifest(data, path)
    channels, size = int(data.get("channels", 3)), max(8, int(data.get("max_side", 0)) or 256)
    reports = []
    with tqdm(total=sum(s["count"] for s in data["shards"]), desc="verify", unit="img", disable=not progress) as bar:
        for entry in data["shards"]:
            shard = path.parent / entry["name"]
            if not shard.is_file():
                reports.append(ShardReport(entry["name"], entry["count"], 0, 0, missing_file=True))
                continue
            found = bad = 0
            for raw in read_shard(shard):
                found += 1
                bad += decode(raw, size, channels) is None
                bar.update(1)
            reports.append(ShardReport(entry["name"], entry["count"], found, bad))
    return reports
