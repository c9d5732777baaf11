"""Fine-tuning under torchrun (gloo on CPU, real processes): 2 processes train the model 1 process trains,
and a NaN on one rank only stops every rank cleanly, however the ranks' clocks disagree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.finetune.helpers import ft_overrides, write_tiny_backbone
from tests.test_distributed import free_port

ROOT = Path(__file__).resolve().parents[2]  # the fault-injecting script imports dinolite from this checkout
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
# drop path draws its masks per rank (engine/streams.py): equal trajectories need it off
SAME = {"model.drop_path_rate": 0.0, "train.log_every": 2}


def torchrun(script: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           *script]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def final_model(run: Path) -> dict[str, torch.Tensor]:
    path = sorted(run.glob("checkpoint-*.pt"))[-1]
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    return write_tiny_backbone(tmp_path_factory.mktemp("ftddp") / "backbone.safetensors")


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(tmp_path, init):
    """The consistency method: its second view draws from the augmentation stream too."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["finetune", "--no-progress"]
    single = subprocess.run([sys.executable, "-m", "dinolite.cli", *args, *ft_overrides(one, init, "consistency", **SAME)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    double = torchrun(["-m", "dinolite.cli", *args, *ft_overrides(two, init, "consistency", **SAME)])
    assert double.returncode == 0, double.stderr[-3000:]
    a, b = final_model(one), final_model(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_without_a_hang(tmp_path, init):
    """Rank 1's losses turn NaN at step 3; a checkpoint is due at every log step on the ranks' own clocks.
    Both ranks must leave with the NaN line, well within the process group's 30-minute timeout."""
    run = tmp_path / "run"
    extra = {"train.checkpoint_every_minutes": 1e-6, "train.log_every": 1}
    script = [str(Path(__file__).with_name("nan_on_one_rank.py")), "finetune", "--no-progress",
              *ft_overrides(run, init, **extra)]
    proc = torchrun(script, timeout=240)
    assert proc.returncode != 0
    stopped = [line for line in proc.stderr.splitlines() if "training stopped: the loss became NaN" in line]
    assert len(stopped) == 2 and {"(rank 0)" in line for line in stopped} == {True, False}, proc.stderr[-3000:]
    assert all("the last good checkpoint is" in line and "checkpoint-00000003.pt" in line for line in stopped)
    state = torch.load(run / "checkpoint-00000003.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "checkpoint-00000004.pt").exists()  # never a checkpoint of diverged weights
