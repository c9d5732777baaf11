import pytest
import torch
from PIL import Image

from dinolite.data import BatchLoader
from dinolite.data.folder import ImageFolder
from dinolite.errors import UserError


def make_folder(root, sizes):
    for i, (h, w) in enumerate(sizes):
        cls = root / ("cat" if i % 2 else "dog")
        cls.mkdir(parents=True, exist_ok=True)
        colour = (200, 30 * i % 255, 10)
        Image.new("RGB", (w, h), colour).save(cls / f"img{i}.{'png' if i % 3 else 'jpg'}")


def test_folder_decodes_bounds_and_pads(tmp_path):
    make_folder(tmp_path, [(40, 60), (300, 100), (64, 64), (10, 20)])
    src = ImageFolder(str(tmp_path), size=64)
    assert src.classes == ["cat", "dog"] and len(src) == 4
    images, hw, labels = src.__getitems__(list(range(4)))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    sizes = {tuple(x) for x in hw.tolist()}
    assert sizes == {(40, 60), (64, 21), (64, 64), (10, 20)}  # longer side bounded, aspect kept
    for img, (h, w) in zip(images, hw.tolist()):
        assert img[:, h:, :].sum() == 0 and img[:, :, w:].sum() == 0  # padding outside the image
        assert img[0, :h, :w].float().mean() > 150  # the red channel of the picture is there
    assert sorted(labels.tolist()) == [0, 0, 1, 1]


def test_missing_or_empty_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ImageFolder(str(tmp_path / "missing"))
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError, match="no images found"):
        ImageFolder(str(tmp_path))


def test_loader_order_is_seeded_and_resumable(tmp_path):
    make_folder(tmp_path, [(8, 8)] * 10)
    src = ImageFolder(str(tmp_path), size=8)
    loader = BatchLoader(src, batch_size=3, seed=1, num_workers=2)
    assert loader.steps_per_epoch == 3
    full = [img for img, _, _ in loader.epoch(0)]
    tail = [img for img, _, _ in loader.epoch(0, start_step=1)]
    assert all(torch.equal(a, b) for a, b in zip(full[1:], tail)) and len(tail) == 2
    assert loader.batch_indices(0) != loader.batch_indices(1)
    ranks = [BatchLoader(src, 2, 1, rank=r, world=2).batch_indices(0) for r in (0, 1)]
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == 8  # two ranks split the epoch without overlap
