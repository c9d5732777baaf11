"""One data protocol: every loader, whatever its source, yields ``(images uint8, hw, labels)`` batches in a
seeded order that resumes mid-epoch, each image with its own label (-1 where the data has none)."""

import torch

from dinolite.data import build_loader, eval_batches
from dinolite.data.fashion_mnist import FashionMNIST
from dinolite.data.shards import ShardSet
from tests.helpers import write_shards, write_unlabelled_shard


def test_every_loader_yields_images_with_their_own_labels(tmp_path, fmnist_root):
    ref = FashionMNIST(str(fmnist_root), subset=96)
    label_of = {ref.images[i].numpy().tobytes(): int(ref.labels[i]) for i in range(96)}
    assert len(label_of) == 96  # no two images alike: an image names its label
    write_shards(fmnist_root, tmp_path / "s", 96, 32)
    for source in (ref, ShardSet(str(tmp_path / "s"), shuffle_buffer=16)):
        loader = build_loader(source, 16, seed=1)
        batches = list(loader.epoch(0))
        assert len(batches) == loader.steps_per_epoch == 6 and loader.skipped_samples() == 0
        for images, hw, labels in batches:
            assert images.dtype == torch.uint8 and images.shape == (16, 1, 28, 28) and (hw == 28).all()
            assert labels.dtype == torch.int64 and labels.tolist() == [label_of[x.numpy().tobytes()] for x in images]
        tail = list(loader.epoch(0, start_step=4))  # a resume mid-epoch reads the same batches
        assert len(tail) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
                                      for a, b in zip(batches[4:], tail, strict=True))
        in_order = torch.cat([y for _, _, y in eval_batches(source, 40)])
        assert torch.equal(in_order, ref.labels)


def test_unlabelled_samples_carry_minus_one(tmp_path):
    shards = ShardSet(str(write_unlabelled_shard(tmp_path / "u", 8, ["a", "b"])))
    (images, hw, labels), = build_loader(shards, 8, seed=0).epoch(0)
    assert images.shape == (8, 1, 28, 28) and labels.tolist() == [-1] * 8
