"""Fixtures shared by the tests, and how the suite shares the machine's cores between its workers."""

import os
from pathlib import Path

import pytest

from tests.helpers import FMNIST

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in two pytest-xdist workers (pyproject's addopts), one per core of a 2-core machine: each
    # worker and the processes its tests start use one torch thread, so the workers do not oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items) -> None:
    """The SLURM tests share one cluster: they all run in one worker (``--dist loadgroup``), one job at a time."""
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


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
