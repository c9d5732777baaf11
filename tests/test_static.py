"""Static checks: ruff and mypy on the package and the launcher, with the settings of pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    out = run("ruff", "check", "--no-cache", "dinolite", "launch")
    assert out.returncode == 0, f"ruff check dinolite launch:\n{out.stdout}\n{out.stderr}"


@pytest.mark.slow  # about 25 s on 2 CPU cores without mypy's cache (a few seconds with it)
def test_mypy_is_clean():
    out = run("mypy", "dinolite", "launch")
    assert out.returncode == 0, f"mypy dinolite launch:\n{out.stdout}\n{out.stderr}"
