"""Test helpers: a tiny recipe on a Fashion-MNIST subset (real data, CPU-sized model)."""

from __future__ import annotations

import io
import json
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
