"""Every row is its own image: a corrupt or truncated file in a folder, or an undecodable member of a shard, is
left out of ``dinolite embed``'s rows and of ``dinolite knn``'s bank and queries (counted and listed), never
replaced by another image, under one process and under two torchrun processes."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinolite.cli import main
from tests.eval.test_embed import FAST, knn_features, leftovers, official_checkpoint, read_embedding
from tests.test_distributed import free_port

CLASSES = ("a", "b")


def png(seed: int) -> bytes:
    g = np.random.default_rng(seed)
    h, w = int(g.integers(16, 40)), int(g.integers(16, 40))
    buf = io.BytesIO()
    Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def folders(root: Path) -> tuple[Path, Path, list[Path]]:
    """``root/dirty``: train/ and val/ with 5 good PNGs per class, plus a corrupt file in train/a, a truncated PNG
    in train/b and a truncated one in val/a; ``root/clean``: the same good files alone. Returns both roots and the
    bad files."""
    dirty, clean, bad = root / "dirty", root / "clean", []
    for split in ("train", "val"):
        for c, cls in enumerate(CLASSES):
            for base in (dirty, clean):
                (base / split / cls).mkdir(parents=True)
            for i in range(5):
                data = png(100 * c + 10 * i + (split == "val"))
                for base in (dirty, clean):
                    (base / split / cls / f"{i}.png").write_bytes(data)
    broken = {("train", "a", "corrupt.png"): b"\x89PNG\r\n\x1a\n this is not an image",
              ("train", "b", "trunc.png"): png(7)[:60], ("val", "a", "trunc.png"): png(8)[:80]}
    for (split, cls, name), data in broken.items():
        path = dirty / split / cls / name
        path.write_bytes(data)
        bad.append(path)
    return dirty, clean, bad


def by_name(out: Path, base: Path) -> dict[str, tuple[torch.Tensor, str]]:
    """Row features and label of each image, keyed by its path relative to ``base`` (or by its shard key)."""
    feats, rows, _ = read_embedding(out)
    key = (lambda p: str(Path(p).relative_to(base))) if base else (lambda p: p)
    return {key(r["path"]): (feats[i], r["label"]) for i, r in enumerate(rows)}


def assert_same_rows(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref)
    for name, (feat, label) in ref.items():
        assert got[name][1] == label, name
        torch.testing.assert_close(got[name][0], feat, rtol=1e-5, atol=1e-5, msg=name)


def torchrun(command: str, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "dinolite.cli", command, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("unreadable")
    weights = official_checkpoint(root / "dino.pth")
    dirty, clean, bad = folders(root)
    view = [*FAST, "decode_size=48", "eval.image_size=32", "eval.batch_size=4"]
    ref = root / "clean-emb"
    assert main(["embed", str(weights), "--out", str(ref), "--no-progress", "--data", str(clean), *view]) == 0
    return weights, dirty, clean, bad, view, by_name(ref, clean / "train")


def check_embedding(out: Path, dirty: Path, bad: list[Path], ref: dict) -> None:
    """The rows are the clean folder's rows, file for file; embed.json counts the two unreadable train files and
    unreadable.txt names them."""
    assert_same_rows(by_name(out, dirty / "train"), ref)
    _, rows, info = read_embedding(out)
    assert info["count"] == len(rows) == 10 and info["left_out"] == info["unreadable"] == 2
    assert info["missing"] == 0 and info["unreadable_list"] == "unreadable.txt"
    listed = [line.split("\t")[0] for line in (out / "unreadable.txt").read_text().splitlines()]
    assert listed == [str(p.absolute()) for p in bad if "train" in p.parts]
    assert not {str(p.absolute()) for p in bad} & {r["path"] for r in rows}


def test_embed_and_knn_leave_unreadable_files_out(setting, tmp_path, capsys):
    weights, dirty, _, bad, view, ref = setting
    out = tmp_path / "emb"
    assert main(["embed", str(weights), "--out", str(out), "--no-progress", "--data", str(dirty), *view]) == 0
    captured = capsys.readouterr()
    assert "embedded 10 images of the train split" in captured.out
    assert "left out 2 unreadable image(s) (listed in unreadable.txt)" in captured.err
    check_embedding(out, dirty, bad, ref)
    # knn scores the same rows: its bank is the embedding, its queries the 10 readable val images
    feats, labels = knn_features(weights, "train", [str(dirty), *view])
    got, rows, _ = read_embedding(out)
    torch.testing.assert_close(feats, got, rtol=0, atol=1e-6)
    assert labels.tolist() == [int(r["label"]) for r in rows]
    capsys.readouterr()
    figures = tmp_path / "knn.json"
    assert main(["knn", str(weights), "--no-cache", "--no-progress", "--k", "3", "--json", str(figures),
                 "--data", str(dirty), *view]) == 0
    captured = capsys.readouterr()
    assert "10 bank, 10 queries (left out as unreadable: 2 of the bank, 1 of the queries)" in captured.out
    js = json.loads(figures.read_text())
    assert js["bank"] == 10 and js["queries"] == 10
    assert [u["name"] for u in js["left_out"]["queries"]["unreadable"]] == [str(bad[2].absolute())]
    assert len(js["left_out"]["bank"]["unreadable"]) == 2
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_processes_embed_the_same_rows(setting, tmp_path):
    """Two ranks of 12 files in batches of 4: rank 0 reads files 0-7 (the corrupt one among them), rank 1 files
    8-11 (the truncated one); their parts join in order, the same rows as one process."""
    weights, dirty, _, bad, view, ref = setting
    out = tmp_path / "emb"
    run = torchrun("embed", [str(weights), "--out", str(out), "--no-progress", "--data", str(dirty), *view])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("embedded 10 images") == 1
    check_embedding(out, dirty, bad, ref)


@pytest.mark.slow
def test_two_processes_score_the_same_images_in_knn(setting, tmp_path):
    weights, dirty, _, bad, view, _ = setting
    figures = tmp_path / "knn.json"
    run = torchrun("knn", [str(weights), "--no-cache", "--no-progress", "--k", "3", "--json", str(figures),
                           "--data", str(dirty), *view])
    assert run.returncode == 0, run.stderr[-3000:]
    js = json.loads(figures.read_text())
    assert js["bank"] == 10 and js["queries"] == 10
    assert [u["name"] for u in js["left_out"]["bank"]["unreadable"]] == [str(p.absolute()) for p in bad[:2]]
    one = tmp_path / "one.json"
    assert main(["knn", str(weights), "--no-cache", "--no-progress", "--k", "3", "--json", str(one),
                 "--data", str(dirty), *view]) == 0
    assert json.loads(one.read_text())["knn"] == js["knn"]


def shards(folder: Path, out: Path, damaged: bool) -> Path:
    """train/ of ``folder`` as two shards written by ``dinolite shards``, and, when ``damaged``, one member of each
    shard overwritten with bytes that do not decode (the tar itself intact): keys kept, images gone."""
    assert main(["shards", str(folder / "train"), "--out", str(out), "--max-count", "6", "--no-progress"]) == 0
    if not damaged:
        return out
    from webdataset import TarWriter

    from dinolite.data.shard_read import read_shard

    for tar in sorted(out.glob("*.tar")):
        samples = list(read_shard(tar))
        with open(tar, "wb") as f:
            writer = TarWriter(f, mtime=0)
            for j, s in enumerate(samples):
                data = s.data[:50] if j == 1 else s.data  # a truncated image inside a whole tar
                writer.write({"__key__": s.key, "png": data, "cls": str(s.label).encode()})
            writer.close()
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:
        entry["bytes"] = (out / entry["name"]).stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.slow
def test_a_damaged_shard_member_is_left_out_by_one_and_two_processes(setting, tmp_path):
    weights, _, clean, _, view, _ = setting
    data = [*view, "subset=0", "test_subset=0"]
    good, bad = shards(clean, tmp_path / "good", False), shards(clean, tmp_path / "bad", True)
    ref, one, two = tmp_path / "ref", tmp_path / "one", tmp_path / "two"
    for src, out in ((good, ref), (bad, one)):
        items = [str(src), f"eval_shards={src}", *data]
        assert main(["embed", str(weights), "--out", str(out), "--no-progress", "--data", *items]) == 0
    items = [str(bad), f"eval_shards={bad}", *data]
    run = torchrun("embed", [str(weights), "--out", str(two), "--no-progress", "--data", *items])
    assert run.returncode == 0, run.stderr[-3000:]
    reference = by_name(ref, None)
    keys = sorted(reference)
    lost = [keys[1], keys[7]]  # the second member of each shard of 6
    for out in (one, two):
        _, rows, info = read_embedding(out)
        assert info["unreadable"] == info["left_out"] == 2 and info["count"] == 8
        assert [line.split("\t")[0] for line in (out / "unreadable.txt").read_text().splitlines()] == lost
        assert_same_rows(by_name(out, None), {k: v for k, v in reference.items() if k not in lost})
    shutil.rmtree(tmp_path / "good")
    assert leftovers(tmp_path) == []


def test_the_online_knn_scores_readable_images_only(setting, capsys):
    """The online k-NN on the folder's train (bank) and val (queries): the unreadable files are left out and named
    once, its query count (the collapse monitor's noise) is the images scored, and the figure is the k-NN of the
    clean folder."""
    from dinolite.data.folder import ImageFolder
    from dinolite.eval.features import RawPixels
    from dinolite.eval.online import OnlineKNN
    from dinolite.maths.augment import EvalTransform

    _, dirty, clean, bad, _, _ = setting
    transform = EvalTransform(32, 1.0, [0.5] * 3, [0.25] * 3)

    def online(root: Path) -> OnlineKNN:
        return OnlineKNN(ImageFolder(str(root / "train"), 48), ImageFolder(str(root / "val"), 48), transform,
                         torch.device("cpu"), n_bank=0, n_queries=0, k=3, batch_size=4)

    dirty_knn, clean_knn = online(dirty), online(clean)
    assert dirty_knn.queries == 11  # asked for: every val file
    figure = dirty_knn(RawPixels())
    assert dirty_knn.queries == 10 and sorted(dirty_knn.left_out) == sorted(str(p.absolute()) for p in bad)
    assert "online k-NN: left out 3 unreadable image(s)" in capsys.readouterr().err
    assert figure == pytest.approx(clean_knn(RawPixels()), abs=1e-9)
    dirty_knn(RawPixels())
    assert "left out" not in capsys.readouterr().err  # named once
