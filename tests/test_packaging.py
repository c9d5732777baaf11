"""The wheel built from the repository: the package, its recipes, py.typed and the SLURM launcher, importable
from an installed copy outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_launch_and_recipes_and_imports_outside_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("dinolite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"launch/slurm.py", "dinolite/py.typed", "dinolite/configs/quickstart.yaml",
            "dinolite/configs/resnet50_imagenet.yaml"} <= names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    probe = ("import launch.slurm, dinolite, dinolite.config as c; "
             "print(launch.slurm.__file__); print(c.load_config('resnet50_imagenet').model.arch)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path, arch = out.stdout.split()
    assert Path(path).is_relative_to(tmp_path / "site") and arch == "resnet50"
