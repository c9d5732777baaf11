"""Labelled on-device augmentation and the consistency method's second view."""

import torch

from dinolite.data.fashion_mnist import FashionMNIST
from dinolite.finetune.augment import ConsistencyView, LabeledAugment


def batch(fmnist_root, n=16):
    data = FashionMNIST(str(fmnist_root), "test", subset=n)
    return data.__getitems__(list(range(n)))


def aug(**kw):
    args = dict(size=28, scale=(0.3, 1.0), flip_p=0.5, jitter_p=0.0, brightness=0.4, contrast=0.4,
                saturation=0.4, mean=[0.5], std=[0.25])
    args.update(kw)
    return LabeledAugment(**args)


def test_views_are_seeded_and_in_range(fmnist_root):
    images, hw, _ = batch(fmnist_root)
    a = aug(jitter_p=1.0)
    v1 = a(images, hw, torch.Generator().manual_seed(3))
    v2 = a(images, hw, torch.Generator().manual_seed(3))
    v3 = a(images, hw, torch.Generator().manual_seed(4))
    assert v1.shape == (16, 1, 28, 28) and torch.equal(v1, v2) and not torch.equal(v1, v3)
    assert v1.min() >= 0 and v1.max() <= 1
    torch.testing.assert_close(a.normalise(v1), (v1 - 0.5) / 0.25)


def test_whole_image_crop_without_flip_is_the_image(fmnist_root):
    images, hw, _ = batch(fmnist_root)
    x = images.float() / 255
    v = aug(scale=(1.0, 1.0), flip_p=0.0)(images, hw, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v, x, atol=1e-5, rtol=0)
    flipped = aug(scale=(1.0, 1.0), flip_p=1.0)(images, hw, torch.Generator().manual_seed(0))
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_consistency_view_strength(fmnist_root):
    images, hw, _ = batch(fmnist_root)
    x = images.float() / 255
    same = ConsistencyView(0.0, [0.5], [0.25])(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, (x - 0.5) / 0.25)
    gaps = []
    for s in (0.25, 1.0):
        v = ConsistencyView(s, [0.5], [0.25])(x, torch.Generator().manual_seed(0))
        assert v.shape == x.shape
        gaps.append((v * 0.25 + 0.5 - x).abs().mean().item())
    assert 0 < gaps[0] < gaps[1]  # a stronger view moves further from x
