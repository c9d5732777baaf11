"""Test helpers: a tiny recipe on a Fashion-MNIST subset (real data, CPU-sized model)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from dinolite.config import Config, load_config

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def tiny_overrides(run_dir: Path, **extra) -> list[str]:
    """Overrides that turn the quickstart into a seconds-long run on 128 real images."""
    values = {
        "train.output_dir": str(run_dir),
        "data.subset": 128,
        "data.test_subset": 64,
        "model.patch_size": 7,
        "model.embed_dim": 32,
        "model.depth": 2,
        "model.num_heads": 2,
        "model.out_dim": 64,
        "model.hidden_dim": 64,
        "model.bottleneck_dim": 16,
        "model.drop_path_rate": 0.1,
        "augment.local_crops_number": 2,
        "augment.local_crops_size": 14,
        "optim.batch_size": 32,
        "optim.epochs": 2,
        "train.budget_minutes": 0,  # the quickstart's 10-minute budget would replace optim.epochs
        "eval.online_every": 0,
        "eval.knn_pixels": False,
        "optim.warmup_epochs": 1,
        "train.log_every": 1,
        "eval.knn_random_init": False,
        "eval.batch_size": 64,
        "train.precision": "fp32",  # no timing probe: tests compare runs bit for bit
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


# Mount a tmpfs of $SIZE on $0 (in a private mount namespace: ``unshare -rm``, so it vanishes with the process),
# fill it up to $FREE bytes of free space when $FREE is set, run the command ($2) from the repository ($1), list
# what is left on the mount (the filler aside), run the report command ($3), and give the command's exit code.
SMALL_DISK = """mount -t tmpfs -o size=$SIZE tmpfs "$0" || exit 99
if [ -n "$FREE" ]; then python3 -c "import os, shutil, sys; d = sys.argv[1]; f = open(d + '/.filler', 'wb'); \\
f.write(bytes(max(0, shutil.disk_usage(d).free - int(sys.argv[2])))); f.close()" "$0" "$FREE" || exit 97; fi
cd "$1" || exit 98
eval "$2"; code=$?
echo "files: $(cd "$0" && find . -mindepth 1 ! -name .filler | sort | tr '\\n' ' ')"
eval "$3"
exit $code"""


def on_a_small_disk(tmp_path: Path, command: str, size: str, free: int | None = None,
                    report: str = "") -> tuple[subprocess.CompletedProcess, str]:
    """Run the shell ``command`` (``$0`` is the mount, ``tmp_path/small``) on a real ``size`` tmpfs, left with
    ``free`` bytes when given, then the shell ``report``; returns the process and the files left on the mount."""
    small = tmp_path / "small"
    small.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIZE": size, "FREE": "" if free is None else str(free),
           "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", SMALL_DISK, str(small), os.getcwd(), command, report],
                          capture_output=True, text=True, timeout=300, env=env)
    left = proc.stdout.rsplit("files:", 1)[-1].splitlines()[0].strip() if "files:" in proc.stdout else "?"
    return proc, left


def cli(*args: object) -> str:
    """The shell command line of ``dinolite ARGS`` run by this interpreter."""
    return " ".join([sys.executable, "-m", "dinolite.cli", *map(str, args)])


def tiny_config(run_dir: Path, **extra) -> Config:
    return load_config("quickstart", tiny_overrides(run_dir, **extra))


def write_shards(fmnist: Path, out: Path, n: int, max_count: int, split: str = "train") -> dict:
    """The first ``n`` Fashion-MNIST images of ``split`` as shards of at most ``max_count``, written by
    ``dinolite shards`` itself; returns the manifest."""
    from dinolite.cli import main

    code = main(["shards", f"fashion_mnist:{fmnist}", "--out", str(out), "--split", split,
                 "--subset", str(n), "--max-count", str(max_count), "--no-progress"])
    assert code == 0
    return json.loads((out / "manifest.json").read_text())


def write_unlabelled_shard(out: Path, n: int, classes: list[str]) -> Path:
    """One shard of ``n`` 28-pixel grey PNGs without ``.cls`` files (what unlabelled data looks like),
    and a manifest naming ``classes``."""
    import numpy as np
    from PIL import Image
    from webdataset import TarWriter

    from dinolite.data.manifest import manifest_dict, write_manifest

    out.mkdir(parents=True)
    with open(out / "train-000000.tar", "wb") as f:
        writer = TarWriter(f, mtime=0)
        for k in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((28, 28), 10 * k % 256, dtype=np.uint8)).save(buf, format="PNG")
            writer.write({"__key__": f"{k:06d}", "png": buf.getvalue()})
        writer.close()
    entry = {"name": "train-000000.tar", "count": n, "bytes": (out / "train-000000.tar").stat().st_size}
    write_manifest(out, manifest_dict([entry], classes, 1, 28, "test"))
    return out
