import gzip

import pytest
import torch

from dinolite.data.fashion_mnist import FashionMNIST
from dinolite.errors import UserError


def test_reads_the_real_idx_files(fmnist_root):
    train, test = FashionMNIST(str(fmnist_root), "train"), FashionMNIST(str(fmnist_root), "test")
    assert len(train) == 60000 and len(test) == 10000
    images, hw, labels = train.__getitems__([0, 1, 59999])
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.uint8
    assert hw.tolist() == [[28, 28]] * 3
    assert torch.bincount(train.labels).tolist() == [6000] * 10  # the published class balance
    assert labels[0].item() == 9  # the first training image is an ankle boot
    assert images.float().mean() > 10  # real pictures, not zeros


def test_missing_files_name_the_path_and_the_package(tmp_path):
    with pytest.raises(UserError, match=r"apt-get install dataset-fashion-mnist") as err:
        FashionMNIST(str(tmp_path / "nowhere"))
    assert "nowhere" in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_is_reported(tmp_path, fmnist_root):
    raw = gzip.open(fmnist_root / "train-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:5000])
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes((fmnist_root / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(UserError, match="truncated"):
        FashionMNIST(str(tmp_path))
