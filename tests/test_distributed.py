"""Data-parallel training with real processes (gloo on CPU): same run on 1 or 2 processes, resume across world
sizes, errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dinolite.config import AugmentConfig
from dinolite.distributed import read_rendezvous
from dinolite.engine.runtime import per_rank_batch
from dinolite.errors import UserError
from dinolite.maths.augment import GlobalBatchRNG, MultiCrop
from dinolite.pretraining.train import pretrain
from tests.forked import Forked
from tests.helpers import tiny_config, tiny_overrides

# drop path draws its masks per rank, and KoLeo's nearest neighbours are searched within each rank's batch
# (as dinov2 does), so equal trajectories need both off; everything else is on.
DDP = {"model.drop_path_rate": 0.0, "loss.koleo_weight": 0.0, "eval.knn_at_end": False, "train.threads": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(run_dir: Path, nproc: int = 2, **extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           "-m", "dinolite.cli", "pretrain", "--no-progress", *tiny_overrides(run_dir, **{**DDP, **extra})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def ranks(run_dir: Path, nproc: int = 2, **extra) -> subprocess.CompletedProcess:
    """What ``torchrun(run_dir, nproc, **extra)`` does, without the launcher's process: the ranks forked
    ready-imported (tests/forked.py: no start-up each) with the variables torchrun sets; their output together,
    the first failing code."""
    argv = ["pretrain", "--no-progress", *tiny_overrides(run_dir, **{**DDP, **extra})]
    rendezvous = {"OMP_NUM_THREADS": "1", "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [Forked(argv, {**os.environ, **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
    outs = [p.communicate(timeout=300) for p in procs]
    code = next((p.returncode for p in procs if p.returncode), 0)
    return subprocess.CompletedProcess(argv, code, "".join(o for o, _ in outs), "".join(e for _, e in outs))


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {**{f"student.{k}": v for k, v in state["student"].items()},
            **{f"teacher.{k}": v for k, v in state["teacher"].items()}, "center": state["loss"]["center"],
            **({"ibot_center": state["ibot_loss"]["center"]} if "ibot_loss" in state else {})}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_rendezvous_from_torchrun_slurm_or_nothing():
    assert read_rendezvous({}).world == 1
    assert read_rendezvous({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}).world == 1  # a python typed in salloc
    r = read_rendezvous({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (r.rank, r.world, r.local_rank, r.master_addr, r.master_port, r.launcher) == (3, 4, 1, "h", 1234, "torchrun")
    r = read_rendezvous({"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
                         "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu07,gpu08"})
    assert (r.rank, r.world, r.local_rank, r.master_addr, r.master_port, r.launcher) == (9, 16, 1, "gpu07",
                                                                                        20000 + 4242, "slurm")


def test_global_batch_must_split_evenly():
    assert per_rank_batch(1024, 16) == 64
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        per_rank_batch(32, 3)


def test_crops_do_not_depend_on_the_number_of_ranks():
    cfg = AugmentConfig(global_crops_size=16, local_crops_size=8, local_crops_number=2)
    aug = MultiCrop(cfg)
    images = torch.randint(0, 256, (8, 3, 24, 24), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    hw = torch.full((8, 2), 24)
    whole = aug(images, hw, GlobalBatchRNG(torch.Generator().manual_seed(5), 0, 8, 8))
    halves = [aug(images[r * 4:(r + 1) * 4], hw[:4], GlobalBatchRNG(torch.Generator().manual_seed(5), r * 4, 4, 8))
              for r in range(2)]
    for name in ("globals_", "locals_"):
        views = getattr(whole, name).view(-1, 8, 3, *getattr(whole, name).shape[-2:])  # [V, B, ...]
        parts = [getattr(h, name).view(-1, 4, 3, *views.shape[-2:]) for h in halves]
        torch.testing.assert_close(torch.cat(parts, dim=1), views)
    # one process: exactly the plain generator's stream
    plain = aug(images, hw, torch.Generator().manual_seed(5))
    torch.testing.assert_close(plain.globals_, whole.globals_)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_on_one(tmp_path):
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "two-then-one"
    knn = {"eval.knn_at_end": True}  # at the end, the k-NN features are extracted half by each rank
    one_knn = pretrain(tiny_config(one, **{**DDP, **knn}), progress=False)["knn_top1"]

    first = ranks(two, **{"train.stop_after_steps": 3})  # 4 steps per epoch: stops mid-epoch
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(two, resumed)
    saved_by_two = torch.load(resumed / "checkpoint-00000003.pt", map_location="cpu", weights_only=True)
    assert saved_by_two["world"] == 2
    second = ranks(two, **knn)  # the 2-process run goes on with 2 processes...
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 3" in second.stdout
    two_knn = float(re.search(r"teacher ([\d.]+) %", second.stdout).group(1))
    assert two_knn == pytest.approx(one_knn, abs=0.01)
    cfg = tiny_config(resumed, **DDP)  # ...and its copy with 1
    pretrain(cfg, progress=False)

    ref = losses(one)
    assert sorted(ref) == list(range(1, 9))
    for run in (two, resumed):
        got = losses(run)
        assert sorted(got) == sorted(ref)
        for step in ref:
            assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), (run.name, step)
    assert_same_weights(one / "checkpoint-00000008.pt", two / "checkpoint-00000008.pt")
    assert_same_weights(one / "checkpoint-00000008.pt", resumed / "checkpoint-00000008.pt")


@pytest.mark.slow
def test_world_size_that_does_not_divide_the_batch(tmp_path):
    out = torchrun(tmp_path / "run", **{"optim.batch_size": 33})
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert errors and all("optim.batch_size=33" in e and "not divisible by the 2 processes" in e for e in errors)
    assert "/dinolite/" not in out.stderr  # no traceback through our code (torchrun prints its own summary)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


@pytest.mark.slow
def test_output_dir_not_visible_from_every_rank(tmp_path):
    """Rank 1 runs in its own mount namespace with a private tmpfs over the run's parent: a node-local disk."""
    shared = tmp_path / "scratch"
    shared.mkdir()
    run = shared / "run"
    port = free_port()
    args = [sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", *tiny_overrides(run, **DDP)]

    def env(rank):
        return {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}

    private = ["unshare", "--mount", "sh", "-c", f'mount -t tmpfs none "{shared}" && exec "$@"', "sh", *args]
    procs = [subprocess.Popen(cmd, env=env(r), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, cmd in enumerate([args, private])]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 2, err[-2000:]
        assert "Traceback" not in err
    assert "is not visible from rank(s) [1]" in outs[0][1] and "shared by all nodes" in outs[0][1]
    assert not list(run.glob("checkpoint-*"))


@pytest.mark.slow
def test_knn_command_splits_feature_extraction_over_ranks(tiny_run, tmp_path):
    from dinolite.cli import main

    args = ["knn", str(tiny_run), "--no-cache", "--no-progress", "--k", "5", "20"]
    assert main([*args, "--json", str(tmp_path / "one.json")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "dinolite.cli", *args, "--json", str(tmp_path / "two.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("weighted k-NN") == 1  # rank 0 alone reports
    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["knn"] for n in ("one", "two"))
    assert one.keys() == two.keys()
    queries = json.loads((tmp_path / "one.json").read_text())["queries"]
    for k in one:
        # Halves of a batch may round differently in the matmuls, which can flip one near-tie;
        # features gathered out of order would instead drop the accuracy to chance.
        assert two[k]["top1"] == pytest.approx(one[k]["top1"], abs=100 / queries + 1e-6)


@pytest.mark.slow
def test_finetune_runs_under_torchrun_with_the_same_budget(tmp_path):
    from dinolite.finetune.methods import finetune
    from tests.finetune.helpers import ft_config, ft_overrides, write_tiny_backbone

    init = write_tiny_backbone(tmp_path / "backbone.safetensors")
    one = finetune(ft_config(tmp_path / "one", init, "layerwise"), progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "dinolite.cli", "finetune", "--no-progress", *ft_overrides(tmp_path / "two", init, "layerwise")]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for key in ("steps_per_model", "total_steps", "global_batch", "test_images"):
        assert two[key] == one[key], key
    assert len(two["rows"]) == len(one["rows"])  # every exit and the ensemble, scored on all test images
    assert 0 < two["top1"] <= 100


def assert_two_processes_match_one(tmp_path: Path, overrides: dict) -> Path:
    """One epoch (4 steps) on 1 process and under torchrun on 2: the same losses, then the same weights."""
    one, two = tmp_path / "one", tmp_path / "two"
    pretrain(tiny_config(one, **{**DDP, **overrides}), progress=False)
    out = torchrun(two, **overrides)
    assert out.returncode == 0, out.stderr[-3000:]
    ref, got = losses(one), losses(two)
    assert sorted(ref) == sorted(got) == [1, 2, 3, 4]
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), step
    assert_same_weights(one / "checkpoint-00000004.pt", two / "checkpoint-00000004.pt")
    return one


@pytest.mark.slow
def test_sinkhorn_knopp_two_processes_match_one(tmp_path):
    """Sinkhorn-Knopp's sums are all-reduced: 2 processes give the 1-process targets, hence the same run."""
    assert_two_processes_match_one(tmp_path, {"loss.centering": "sinkhorn_knopp", "loss.sinkhorn_iterations": 3,
                                              "optim.epochs": 1})


@pytest.mark.slow
@pytest.mark.parametrize("centering", ["center", "sinkhorn_knopp"])
def test_ibot_two_processes_match_one(tmp_path, centering):
    """iBOT's masks are drawn per global sample, its loss is divided by the masked crops of the whole batch
    and its center (or Sinkhorn-Knopp) sums over every rank: 2 processes give the 1-process run, although
    the ranks hold different numbers of masked patches."""
    ibot = {"loss.ibot_weight": 1.0, "loss.ibot_mask_probability": 0.5,
            "loss.ibot_separate_head": centering != "center", "loss.centering": centering, "optim.epochs": 1}
    one = assert_two_processes_match_one(tmp_path, ibot)
    assert "ibot_center" in weights(one / "checkpoint-00000004.pt")
