"""Fixtures shared by the tests."""

from pathlib import Path

import pytest

from tests.helpers import FMNIST


@pytest.fixture
def fmnist_root() -> Path:
    # CI installs the Debian package dataset-fashion-mnist; a missing file is a set-up error, not a skip.
    assert (FMNIST / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    return FMNIST
