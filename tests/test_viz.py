"""Attention maps (hook vs. timm's own probabilities, the 60 % mask) and the curves PNG."""

import torch
from PIL import Image

from dinolite.cli import main
from dinolite.viz.attention import cls_attention, last_block_attention, mass_mask
from dinolite.weights import load_backbone


def test_hooked_attention_equals_unfused_probabilities(tiny_run):
    backbone = load_backbone(tiny_run)
    attn = backbone.blocks[-1].attn
    assert attn.fused_attn  # the hook path is the one that matters: no probabilities are materialised
    x = torch.randn(2, 1, 28, 28)
    hooked = last_block_attention(backbone, x)
    seen = []
    attn.fused_attn = False
    handle = attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        backbone(x)
    handle.remove()
    torch.testing.assert_close(hooked, seen[0])
    maps = cls_attention(backbone, x[:1])
    assert maps.shape == (2, 4, 4) and torch.allclose(maps.sum((1, 2)) + seen[0][0, :, 0, 0], torch.ones(2))


def test_mass_mask_is_the_smallest_set_with_60_percent():
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(3, 5, 5, generator=g) ** 4
    mask = mass_mask(attn, 0.6)
    for a, m in zip(attn, mask):
        kept = a[m]
        assert kept.sum() >= 0.6 * a.sum()
        assert kept.sum() - kept.min() < 0.6 * a.sum()  # dropping the weakest kept patch falls short
        assert kept.min() >= a[~m].max()  # the strongest patches are the kept ones


def test_attention_command_writes_png_and_refuses_unreadable_image(tiny_run, tmp_path, capsys):
    img = tmp_path / "img.png"
    Image.fromarray((torch.rand(40, 30) * 255).byte().numpy()).save(img)
    out = tmp_path / "attn.png"
    assert main(["attention", str(tiny_run), str(img), "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 400
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["attention", str(tiny_run), str(bad), "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read image" in err and not (tmp_path / "b.png").exists()


def test_plot_command(tiny_run, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(tiny_run), "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.format == "PNG"
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err


def test_attention_view_centre_crops_a_non_square_image_like_the_evaluation():
    import torch

    from dinolite.viz.attention import prepare

    image = torch.zeros(1, 20, 60, dtype=torch.uint8)
    image[:, :, 20:40] = 255  # a white square in the middle of a wide black image
    x = prepare(image, 10, [0.0], [1.0])
    assert x.shape == (1, 1, 10, 10)
    assert x.min() > 0.99  # only the centre square is shown, not the whole image squeezed to a square
