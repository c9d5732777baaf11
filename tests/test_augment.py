"""Multi-crop: shapes, ranges, per-sample parameters, each op's rate, determinism, grayscale input."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from dinolite.config import AugmentConfig
from dinolite.maths.augment import EvalTransform, MultiCrop, color_jitter, sample_crop_boxes

OFF = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=[0.0, 0.0, 0.0], solarize_p=0.0,
           mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])


def colour_batch(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def full_hw(n, h, w=None):
    return torch.tensor([[h, w or h]] * n)


def run(cfg, images, hw, seed=0):
    return MultiCrop(cfg)(images, hw, torch.Generator().manual_seed(seed))


def rate_tolerance(p, n):
    return 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_shapes_view_major_and_normalised_range():
    cfg = AugmentConfig(global_crops_size=24, local_crops_size=12, local_crops_number=3)
    crops = run(cfg, colour_batch(5), full_hw(5, 32))
    assert crops.globals_.shape == (10, 3, 24, 24) and crops.locals_.shape == (15, 3, 12, 12)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    for x in crops.by_resolution():
        raw = x * std + mean
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    no_locals = run(AugmentConfig(global_crops_size=24, local_crops_number=0), colour_batch(2), full_hw(2, 32))
    assert no_locals.locals_ is None and len(no_locals.by_resolution()) == 1


def test_view_major_order_keeps_the_sample():
    # With crops of the whole image and no other op, view v of sample i is image i resized.
    cfg = AugmentConfig(global_crops_size=16, global_crops_scale=[1.0, 1.0], local_crops_number=0, **OFF)
    images = colour_batch(4, 16)
    crops = run(cfg, images, full_hw(4, 16))
    expected = images.float() / 255
    assert torch.allclose(crops.globals_[:4], expected, atol=1e-5)
    assert torch.allclose(crops.globals_[4:], expected, atol=1e-5)


def test_crop_boxes_follow_random_resized_crop_law():
    g = torch.Generator().manual_seed(0)
    hw = full_hw(4000, 100, 80)
    boxes = sample_crop_boxes(hw, (0.2, 0.6), g)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 80 + 1e-4).all() and (boxes[:, 3] <= 100 + 1e-4).all()
    frac = w * h / 8000
    assert frac.min() >= 0.2 - 1e-4 and frac.max() <= 0.6 + 1e-4
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert frac.mean().item() == pytest.approx(0.4, abs=0.02)  # area fraction uniform in the range
    assert len(torch.unique(boxes[:, 0])) > 3900  # every sample has its own box


def test_crop_boxes_fall_back_to_centre_when_nothing_fits():
    boxes = sample_crop_boxes(full_hw(10, 10, 100), (1.0, 1.0), torch.Generator().manual_seed(0))
    # a 10 x 100 strip: the largest centred box with ratio 4/3 is 13.33 wide, full height
    assert torch.allclose(boxes[:, 3] - boxes[:, 1], torch.full((10,), 10.0))
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], torch.full((10,), 40 / 3), atol=1e-4)
    assert torch.allclose(boxes[:, 0], torch.full((10,), (100 - 40 / 3) / 2), atol=1e-4)


def test_padded_images_are_cropped_inside_their_valid_part():
    # Image content only in the top-left 16 x 8 of a 32 x 32 canvas; the padding is 0 (black).
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    images[:, :, :16, :8] = 200
    cfg = AugmentConfig(global_crops_size=8, global_crops_scale=[0.3, 1.0], local_crops_number=0, **OFF)
    crops = run(cfg, images, full_hw(64, 16, 8))
    assert crops.globals_.min() > 0.7  # no black padding got into any crop


def test_deterministic_under_seed_and_different_across_seeds():
    cfg = AugmentConfig(global_crops_size=16, local_crops_size=8, local_crops_number=2)
    images, hw = colour_batch(6), full_hw(6, 32)
    a, b, c = run(cfg, images, hw, 1), run(cfg, images, hw, 1), run(cfg, images, hw, 2)
    assert torch.equal(a.globals_, b.globals_) and torch.equal(a.locals_, b.locals_)
    assert not torch.equal(a.globals_, c.globals_)


def test_identical_inputs_get_different_parameters_per_sample():
    images = colour_batch(1).expand(16, -1, -1, -1).contiguous()
    crops = run(AugmentConfig(global_crops_size=16, local_crops_number=0), images, full_hw(16, 32))
    flat = crops.globals_.flatten(1)
    assert len({tuple(row.round(decimals=4).tolist()) for row in flat}) == 32


def measured_rate(cfg, images, hw, changed):
    """Fraction of global views (per view index) where ``changed(out, ref)`` holds."""
    crops = run(cfg, images, hw, seed=3).globals_
    n = images.shape[0]
    ref = images.float().div(255).repeat(2, 1, 1, 1)
    hit = changed(crops, ref)
    return hit[:n].float().mean().item(), hit[n:].float().mean().item()


N = 1500
BASE = dict(global_crops_size=8, global_crops_scale=[1.0, 1.0], local_crops_number=0)


def test_flip_rate():
    images = colour_batch(N, 8, seed=1)
    cfg = AugmentConfig(**BASE, **{**OFF, "flip_p": 0.5})
    r1, r2 = measured_rate(cfg, images, full_hw(N, 8),
                           lambda out, ref: (out - ref).abs().flatten(1).amax(1) > 1e-4)
    for r in (r1, r2):
        assert r == pytest.approx(0.5, abs=rate_tolerance(0.5, N))


def test_grayscale_rate():
    images = colour_batch(N, 8, seed=2)
    cfg = AugmentConfig(**BASE, **{**OFF, "grayscale_p": 0.2})
    r1, r2 = measured_rate(cfg, images, full_hw(N, 8),
                           lambda out, ref: (out[:, 0] - out[:, 1]).abs().flatten(1).amax(1) < 1e-6)
    for r in (r1, r2):
        assert r == pytest.approx(0.2, abs=rate_tolerance(0.2, N))


def test_colour_jitter_rate():
    images = colour_batch(N, 8, seed=3)
    cfg = AugmentConfig(**BASE, **{**OFF, "jitter_p": 0.8})
    r1, _ = measured_rate(cfg, images, full_hw(N, 8),
                          lambda out, ref: (out - ref).abs().flatten(1).amax(1) > 1e-4)
    assert r1 == pytest.approx(0.8, abs=rate_tolerance(0.8, N))


def test_blur_rate_per_view():
    images = colour_batch(N, 8, seed=4)
    # sigma >= 1 px so that every blurred view differs visibly from the original
    cfg = AugmentConfig(**BASE, **{**OFF, "blur_p": [1.0, 0.1, 0.5]}, blur_sigma=[1.0, 2.0])
    r1, r2 = measured_rate(cfg, images, full_hw(N, 8),
                           lambda out, ref: (out - ref).abs().flatten(1).amax(1) > 1e-4)
    assert r1 == 1.0
    assert r2 == pytest.approx(0.1, abs=rate_tolerance(0.1, N))
    local_cfg = AugmentConfig(global_crops_size=8, local_crops_size=8, local_crops_scale=[1.0, 1.0],
                              local_crops_number=2, blur_sigma=[1.0, 2.0], **{**OFF, "blur_p": [0.0, 0.0, 0.5]})
    crops = run(local_cfg, images, full_hw(N, 8), seed=4)
    ref = images.float().div(255).repeat(2, 1, 1, 1)
    r_local = ((crops.locals_ - ref).abs().flatten(1).amax(1) > 1e-4).float().mean().item()
    assert r_local == pytest.approx(0.5, abs=rate_tolerance(0.5, 2 * N))


def test_solarize_only_on_second_global_view():
    images = torch.full((N, 3, 8, 8), 230, dtype=torch.uint8)  # bright: solarize turns it dark
    cfg = AugmentConfig(**BASE, **{**OFF, "solarize_p": 0.2})
    r1, r2 = measured_rate(cfg, images, full_hw(N, 8), lambda out, ref: out.flatten(1).amax(1) < 0.5)
    assert r1 == 0.0
    assert r2 == pytest.approx(0.2, abs=rate_tolerance(0.2, N))


def test_colour_jitter_matches_torchvision_functional_ops():
    x = colour_batch(4, 8, seed=5).float() / 255
    f = torch.tensor([0.7, 1.3, 1.0, 0.9])
    one, zero = torch.ones(4), torch.zeros(4)
    order = torch.tensor([[0, 1, 2, 3]] * 4)
    # each op alone (the other factors at identity) equals torchvision's functional op
    out_b = color_jitter(x, f, one, one, zero, order)
    out_c = color_jitter(x, one, f, one, zero, order)
    out_s = color_jitter(x, one, one, f, zero, order)
    h = torch.tensor([0.1, -0.05, 0.0, 0.03])
    out_h = color_jitter(x, one, one, one, h, order)
    for i in range(4):
        assert torch.allclose(out_b[i], TF.adjust_brightness(x[i], f[i].item()), atol=1e-5)
        assert torch.allclose(out_c[i], TF.adjust_contrast(x[i], f[i].item()), atol=1e-5)
        assert torch.allclose(out_s[i], TF.adjust_saturation(x[i], f[i].item()), atol=1e-5)
        assert torch.allclose(out_h[i], TF.adjust_hue(x[i], h[i].item()), atol=2e-3)


def test_colour_jitter_applies_each_sample_in_its_own_order():
    x = colour_batch(2, 8, seed=6).float() / 255
    b, c = torch.tensor([1.4, 1.4]), torch.tensor([0.5, 0.5])
    one, zero = torch.ones(2), torch.zeros(2)
    order = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])  # brightness first vs contrast first
    out = color_jitter(x, b, c, one, zero, order)
    first = TF.adjust_contrast(TF.adjust_brightness(x[0], 1.4), 0.5)
    second = TF.adjust_brightness(TF.adjust_contrast(x[1], 0.5), 1.4)
    assert torch.allclose(out[0], first, atol=1e-5) and torch.allclose(out[1], second, atol=1e-5)


def test_grayscale_input_with_one_channel():
    cfg = AugmentConfig(global_crops_size=28, local_crops_size=12, local_crops_number=2, mean=[0.3], std=[0.35])
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    crops = run(cfg, images, full_hw(6, 28))
    assert crops.globals_.shape == (12, 1, 28, 28) and crops.locals_.shape == (12, 1, 12, 12)
    assert torch.isfinite(crops.globals_).all()


def test_eval_transform_centre_crop():
    images = torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    images[:, :, 10:30, 10:30] = 255  # a white square filling the central half
    out = EvalTransform(10, 0.5, [0, 0, 0], [1, 1, 1])(images, full_hw(1, 40))
    assert out.shape == (1, 3, 10, 10) and torch.allclose(out, torch.ones_like(out))
