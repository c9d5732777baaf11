"""Webdataset shards: writing, round trip, splitting over ranks and workers, bad data, errors, a real run.

Every shard here is written by ``dinolite shards`` from real Fashion-MNIST images; damage is done
to the written files (bytes overwritten, file cut short), nothing is mocked.
"""

import json
import tarfile

import pytest
import torch

from dinolite.cli import main
from dinolite.data import build_loader
from dinolite.data.fashion_mnist import FashionMNIST
from dinolite.data.shard_writer import Sample, SampleSource, write_shards
from dinolite.data.shards import ShardLoader, ShardSet
from dinolite.engine import checkpoint as ckpt
from dinolite.errors import UserError
from tests.helpers import tiny_overrides
from tests.helpers import write_shards as write


def corrupt_image(shard, index):
    """Overwrite the PNG signature of the ``index``-th image in place: the tar stays valid."""
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".png")][index]
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\0" * 16)
    return member.name.split(".")[0]


def truncate(shard, fraction=0.5):
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * fraction)])


def eval_all(shards, batch=32, workers=2):
    out = list(shards.eval_batches(batch, workers))
    return torch.cat([b[0] for b in out]), torch.cat([b[1] for b in out]), torch.cat([b[2] for b in out])


def test_round_trip_same_images_and_labels(tmp_path, fmnist_root):
    m = write(fmnist_root, tmp_path / "s", 200, 64)
    assert [s["count"] for s in m["shards"]] == [64, 64, 64, 8] and m["total"] == 200
    assert m["channels"] == 1 and m["max_side"] == 28 and m["classes"][0] == "t-shirt/top"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json"] + [f"train-00000{i}.tar" for i in range(4)]
    with tarfile.open(tmp_path / "s" / "train-000000.tar") as tar:
        assert tar.getnames()[:2] == ["train_00000000.cls", "train_00000000.png"]  # key, label, PNG bytes
    ref = FashionMNIST(str(fmnist_root), subset=200)
    for spec in ("s", "s/manifest.json", "s/train-{000000..000003}.tar"):
        shards = ShardSet(str(tmp_path / spec))
        assert len(shards) == 200 and shards.channels == 1 and shards.size == 28
        images, hw, labels = eval_all(shards)
        assert torch.equal(images, ref.images) and torch.equal(labels, ref.labels)  # same order, lossless
        assert (hw == 28).all() and shards.skipped_eval == 0
    assert len(ShardSet(str(tmp_path / "s/train-{000001..000002}.tar"))) == 128  # a pattern picks shards
    write(fmnist_root, tmp_path / "again", 200, 64)  # stable keys and fixed mtime: identical bytes
    assert all((tmp_path / "s" / n).read_bytes() == (tmp_path / "again" / n).read_bytes()
               for n in ["manifest.json"] + [f"train-00000{i}.tar" for i in range(4)])


def test_two_ranks_two_workers_see_every_sample_once_per_epoch(tmp_path, fmnist_root):
    write(fmnist_root, tmp_path, 200, 48)  # shards of 48, 48, 48, 48, 8
    shards = ShardSet(str(tmp_path), shuffle_buffer=40)
    loaders = [ShardLoader(shards, 16, seed=3, num_workers=2, rank=r, world=2) for r in (0, 1)]
    assert loaders[0].steps_per_epoch == 6  # 200 // (16 x 2); 8 samples sit out each epoch
    epochs = []
    for epoch in (0, 1):
        per_rank = [[k for b in loader.batches(epoch) for k in b[3]] for loader in loaders]
        assert [len(keys) for keys in per_rank] == [96, 96]  # every rank takes the same number of full steps
        seen = per_rank[0] + per_rank[1]
        assert len(set(seen)) == 192  # nobody sees a sample twice
        assert set(seen) <= {f"train_{i:08d}" for i in range(200)}
        epochs.append(per_rank[0])
    assert epochs[0] != epochs[1]  # shard order and buffer change per epoch
    # resume mid-epoch at an odd step: the worker roles rotate and the same batches follow
    full = [b[3] for b in loaders[1].batches(1)]
    assert [b[3] for b in loaders[1].batches(1, start_step=3)] == full[3:]


def test_corrupt_image_and_truncated_shard_are_skipped_and_counted(tmp_path, fmnist_root, capsys):
    write(fmnist_root, tmp_path, 96, 32)  # 3 shards of 32
    bad_key = corrupt_image(tmp_path / "train-000000.tar", 5)
    truncate(tmp_path / "train-000002.tar")
    shards = ShardSet(str(tmp_path))
    assert "shorter than the manifest says" in capsys.readouterr().err
    images, _, labels = eval_all(shards, batch=10)
    lost = shards.skipped_eval
    kept_of_last = 32 - (lost - 1)
    assert 1 < lost < 33 and len(labels) + lost == 96
    keep = [i for i in range(96) if i != 5 and i < 64 + kept_of_last]  # the tail of the cut shard is gone
    ref = FashionMNIST(str(fmnist_root), subset=96)
    assert torch.equal(images, ref.images[keep]) and torch.equal(labels, ref.labels[keep])
    # training: every step is a full batch (an undecodable image's slot takes another image of its batch);
    # the samples the truncated shard lost are never made up with recycled ones: a worker whose share runs
    # dry ends it, and counts the slots it could not fill
    loader = build_loader(shards, 16, seed=0, num_workers=2)
    assert isinstance(loader, ShardLoader)
    batches = [b for b in loader.batches(0) if len(b[3])]
    assert len(batches) < 6 and all(len(b[3]) == 16 for b in batches)
    keys = [k for b in batches for k in b[3]]
    assert bad_key not in keys and len(keys) - len(set(keys)) <= 2  # the bad image, and one cut in half
    assert loader.skipped_samples() == 96 - len(set(keys))


def test_missing_shard_empty_pattern_and_interrupted_writing_are_user_errors(tmp_path, fmnist_root, capsys):
    write(fmnist_root, tmp_path / "s", 64, 32)
    with pytest.raises(UserError, match="names no shards|no shards given"):
        ShardSet("")
    with pytest.raises(UserError, match="train-000002.tar is missing"):
        ShardSet(str(tmp_path / "s/train-{000000..000005}.tar"))
    (tmp_path / "s/other-000000.tar").write_bytes((tmp_path / "s/train-000000.tar").read_bytes())
    with pytest.raises(UserError, match="not listed"):
        ShardSet(str(tmp_path / "s/other-000000.tar"))
    with pytest.raises(UserError, match="already holds shards"):  # never overwrites
        write_shards(SampleSource([], [], 1, "x", []), tmp_path / "s", "train", 10, 10**6)
    (tmp_path / "s/train-000001.tar").unlink()
    with pytest.raises(UserError, match="train-000001.tar is missing"):
        ShardSet(str(tmp_path / "s"))
    # through the CLI: one line, exit code 2, before any training step
    run = tmp_path / "run"
    code = main(["pretrain", "--no-progress", *tiny_overrides(run, **{
        "data.source": "shards", "data.root": str(tmp_path / "s"), "data.subset": 0, "data.test_subset": 0,
        "eval.knn_at_end": False})])
    assert code == 2 and "is missing" in capsys.readouterr().err and not ckpt.list_checkpoints(run)

    # interrupted writing: the finished shards keep their names, the unfinished one vanishes, no manifest
    def samples():
        png = (tmp_path / "s/train-000000.tar").read_bytes()  # any bytes will do; the run never finishes
        for i in range(5):
            yield Sample(f"{i:04d}", "png", png[:100], 0, 28)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_shards(SampleSource(samples(), ["a"], 1, "test", []), tmp_path / "cut", "train", 2, 10**6)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["train-000000.tar", "train-000001.tar"]
    with pytest.raises(UserError, match="holds no manifest.json"):
        ShardSet(str(tmp_path / "cut"))


def test_pretrain_from_shards_end_to_end(tmp_path, capsys, fmnist_root):
    write(fmnist_root, tmp_path / "train", 128, 48)
    write(fmnist_root, tmp_path / "test", 64, 32, split="test")
    corrupt_image(tmp_path / "train/train-000001.tar", 0)
    shard_overrides = {"data.source": "shards", "data.root": str(tmp_path / "train"),
                       "data.eval_shards": str(tmp_path / "test/test-{000000..000001}.tar"),
                       "data.subset": 0, "data.test_subset": 0, "data.num_workers": 2, "data.shuffle_buffer": 64}
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["pretrain", "--no-progress", *tiny_overrides(straight, **shard_overrides)]) == 0
    out = capsys.readouterr().out
    assert "k-NN top-1 (k=20, T=0.07) on the test split: teacher" in out
    assert "finished at step 8/8" in out and "2 bad samples skipped" in out  # one bad image, two epochs
    records = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 8 and steps[-1]["skipped_samples"] == 2 and 0 <= records[-1]["knn_top1"] <= 100
    # stopped mid-epoch 1 and resumed: the same batches, so the same losses as the straight run
    no_knn = {**shard_overrides, "eval.knn_at_end": False}
    assert main(["pretrain", "--no-progress", *tiny_overrides(split, **no_knn, **{"train.stop_after_steps": 6})]) == 0
    assert main(["pretrain", "--no-progress", *tiny_overrides(split, **no_knn)]) == 0
    losses = [json.loads(x).get("loss") for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert losses == [r["loss"] for r in steps]


def _claim(manifest_dir, factor: float):
    path = manifest_dir / "manifest.json"
    data = json.loads(path.read_text())
    for shard in data["shards"]:
        shard["count"] = int(shard["count"] * factor)
        shard.pop("bytes", None)
    data["total"] = sum(x["count"] for x in data["shards"])
    path.write_text(json.dumps(data))


def test_a_manifest_claiming_far_more_samples_than_fit_is_refused(tmp_path, fmnist_root, capsys):
    write(fmnist_root, tmp_path, 64, 32)
    _claim(tmp_path, 100)
    with pytest.raises(UserError, match="at most .* fit"):
        ShardSet(str(tmp_path))


def test_shards_holding_fewer_samples_than_listed_end_the_epoch_without_recycling(tmp_path, fmnist_root, capsys):
    write(fmnist_root, tmp_path / "train", 96, 48)
    _claim(tmp_path / "train", 1.25)  # 60 listed per shard, 48 there: still plausible by the file sizes
    run = tmp_path / "run"
    overrides = {"data.source": "shards", "data.root": str(tmp_path / "train"), "data.subset": 0, "data.test_subset": 0,
                 "data.num_workers": 1, "eval.knn_at_end": False, "optim.epochs": 2}
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **overrides)]) == 0
    captured = capsys.readouterr()
    assert "hold fewer samples than their manifest says" in captured.err + captured.out
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    short = [r for r in rows if "short_epoch_steps" in r]
    assert len(short) == 2 and all(r["short_epoch_steps"] > 0 for r in short)  # each epoch ended early
    assert 0 < len([r for r in rows if "loss" in r]) < 2 * 3  # fewer steps than the 2 x 120 / 32 planned
    loader = build_loader(ShardSet(str(tmp_path / "train")), 32, seed=0, num_workers=1)
    keys = [k for b in loader.batches(0) for k in b[3]]
    assert keys and len(keys) == len(set(keys))  # no sample twice


@pytest.mark.parametrize("field,value,words", [
    ("count", -8, "integer 'count' >= 0"), ("count", True, "integer 'count' >= 0"),
    ("classes", None, "'classes' must be a list"), ("channels", "three", "'channels' must be 1 or 3"),
    ("name", "/etc/passwd", "is not a file name in the manifest's directory"),
    ("name", "../train-000000.tar", "is not a file name"), ("total", 5, "is not the sum"),
])
def test_manifest_fields_are_checked(tmp_path, fmnist_root, capsys, field, value, words):
    write(fmnist_root, tmp_path, 32, 32)
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    if field in ("count", "name"):
        data["shards"][0][field] = value
    else:
        data[field] = value
    path.write_text(json.dumps(data))
    overrides = {"data.source": "shards", "data.root": str(tmp_path), "data.subset": 0, "data.test_subset": 0,
                 "eval.knn_at_end": False}
    assert main(["pretrain", "--no-progress", *tiny_overrides(tmp_path / "run", **overrides)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_verify_reports_counts_and_undecodable_samples_against_the_manifest(tmp_path, fmnist_root, capsys):
    write(fmnist_root, tmp_path, 96, 32)
    capsys.readouterr()
    assert main(["shards", "--verify", str(tmp_path), "--no-progress"]) == 0
    assert "3 shards: 96 samples read of 96 listed, 0 undecodable; all as listed" in capsys.readouterr().out
    corrupt_image(tmp_path / "train-000000.tar", 3)
    truncate(tmp_path / "train-000002.tar")
    assert main(["shards", "--verify", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "train-000000.tar: 32 samples of 32 listed, 1 undecodable"
    assert out[1].startswith("train-000002.tar: ") and "of 32 listed" in out[1]
    assert out[-1].endswith("2 shard(s) differ from the manifest")
