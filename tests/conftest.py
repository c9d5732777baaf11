"""Fixtures shared by the tests."""

from pathlib import Path

import pytest

from tests.helpers import FMNIST


@pytest.fixture
def fmnist_root() -> Path:
    # CI installs the Debian package dataset-fashion-mnist; a missing file is a set-up error, not a skip.
    assert (FMNIST / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    return FMNIST


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny pretraining run (seconds), shared by the evaluation and export tests."""
    from dinolite.pretraining.train import pretrain
    from tests.helpers import tiny_config

    run = tmp_path_factory.mktemp("tiny") / "run"
    pretrain(tiny_config(run, **{"eval.knn_at_end": False, "data.test_subset": 96}), progress=False)
    return run
