"""A real single-node SLURM cluster (Debian's slurm + munge), started once per test session."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "slurm-local.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    # .ci/run starts it before the tests; "start" is idempotent, so a bare pytest run works too.
    # A cluster that cannot start is a set-up error (root and apt are needed), never a skip.
    out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"tests/cluster/slurm-local.sh start failed:\n{out.stdout}\n{out.stderr}"
