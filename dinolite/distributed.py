"""Process-group helpers: where the rank comes from, joining the group, and collective checks.

A single process needs no set-up, and every helper here also works without a process group.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Rendezvous:
    """What a process needs to join the group: its place in it and where rank 0 listens."""

    rank: int
    world: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" (also what submitit exports), "slurm" (srun) or "single"


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("node[03-05,07]" -> "node03"), through ``scontrol``."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    if "[" not in nodelist:  # a plain list needs no scontrol
        return nodelist.split(",")[0]
    raise UserError(f"cannot expand SLURM_JOB_NODELIST={nodelist!r} without scontrol: "
                    f"set MASTER_ADDR to the first node's address")


def master_port(job_id: str | int) -> int:
    """Rank 0's port for a SLURM job: fixed by the job id (so a requeued job reuses it), in 20000-31999,
    below Linux's ephemeral range (32768+) where a port may be taken by any outgoing connection."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    return 20000 + int(digits) % 12000


def read_rendezvous(env: dict[str, str] | None = None) -> Rendezvous:
    """Rank, world size and rendezvous from whichever launcher started this process.

    ``torchrun`` (and submitit's ``TorchDistributedEnvironment``) set RANK / WORLD_SIZE /
    LOCAL_RANK / MASTER_ADDR / MASTER_PORT; those win. Otherwise a task of an ``srun`` job step
    reads SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID, rank 0 being the first node of the
    job and the port derived from the job id (:func:`master_port`). The step's task count is used rather than
    SLURM_NTASKS so that a single ``python`` typed in an ``salloc`` shell stays one process.
    """
    env = dict(os.environ if env is None else env)
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return Rendezvous(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")),
                          env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "29500")), "torchrun")
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
        addr = env.get("MASTER_ADDR") or _first_slurm_host(env["SLURM_STEP_NODELIST"] if "SLURM_STEP_NODELIST" in env
                                                         else env["SLURM_JOB_NODELIST"])
        port = int(env.get("MASTER_PORT", master_port(env.get("SLURM_JOB_ID", "0"))))
        return Rendezvous(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                          int(env.get("SLURM_LOCALID", "0")), addr, port, "slurm")
    return Rendezvous(0, 1, 0, "127.0.0.1", 0, "single")


def init_from_env(device_type: str, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group the launcher describes; NCCL on GPUs (one process per GPU), gloo on CPU."""
    rdv = read_rendezvous()
    if rdv.world <= 1:
        return DistInfo()
    if device_type == "cuda":
        if rdv.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {rdv.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                            f"start one process per GPU (--gpus-per-node = tasks per node)")
        torch.cuda.set_device(rdv.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                init_method=f"tcp://{rdv.master_addr}:{rdv.master_port}",
                                rank=rdv.rank, world_size=rdv.world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rdv.rank, rdv.world, rdv.local_rank)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_ranks_ok(ok: bool, device: torch.device) -> list[int]:
    """The ranks where ``ok`` is False (every rank gets the same list); ``[]`` for one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [] if ok else [0]
    flags = torch.zeros(dist.get_world_size(), dtype=torch.int32, device=device)
    flags[dist.get_rank()] = int(not ok)
    dist.all_reduce(flags)
    return [r for r, bad in enumerate(flags.tolist()) if bad]


def broadcast_str(value: str) -> str:
    """Rank 0's ``value`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_shared_dir(run_dir: Path, info: DistInfo, device: torch.device) -> None:
    """Fail on every rank unless the file rank 0 just wrote in ``run_dir`` is visible to all ranks.

    Checkpoints are written by rank 0 and read back by every rank on resume, so a run directory on
    a node-local disk would otherwise surface much later as a resume from nothing on other nodes.
    """
    if info.world <= 1:
        return
    token = broadcast_str(secrets.token_hex(8) if info.is_main else "")
    marker = run_dir / f".rank0-{token}"
    if info.is_main:
        marker.write_text(token)
    barrier()
    try:
        seen = marker.read_text() == token
    except OSError:
        seen = False
    bad = all_ranks_ok(seen, device)
    barrier()
    if info.is_main:
        marker.unlink(missing_ok=True)
    if bad:
        raise UserError(f"train.output_dir {run_dir} is not visible from rank(s) {bad} "
                        f"(rank 0 on {socket.gethostname()} wrote to it): use a directory on a file system "
                        f"shared by all nodes")


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over the ranks (in place); ``t`` itself for one process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
