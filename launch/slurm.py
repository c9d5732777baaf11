"""Submit a dinolite pretraining or fine-tuning run to SLURM (or submitit's local executor) and return.

    python -m launch.slurm [pretrain] --config configs/vit_small_imagenet.yaml --nodes 2 --gpus-per-node 8 \\
        --partition P [--account A --qos Q --constraint C --mem-per-gpu M --cpus-per-task N \\
        --timeout-min T] key=value ...
    python -m launch.slurm finetune --config finetune_fmnist --gpus-per-node 1 --partition P \\
        method=born-again init=/shared/runs/quickstart key=value ...

The first word is the kind of run (``dinolite.jobs.JOB_KINDS``), ``pretrain`` when left out; the
recipe and overrides are the ones ``dinolite pretrain`` / ``dinolite finetune`` take (fine-tuning's
``--method``/``--init`` are the keys ``method=``/``init=`` here). One task per GPU (or
``--tasks-per-node`` CPU tasks with ``--gpus-per-node 0``). The config is loaded and checked before
anything is written; the run directory then gets the resolved ``config.yaml`` and a line per
submitted job in ``slurm_jobs.jsonl``; submitit's logs go under ``<run dir>/slurm/``. A preempted or
timed-out job checkpoints at the end of its current step and is requeued; the requeued job resumes
from the newest valid checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dinolite.jobs import JobKind


def build_parser() -> argparse.ArgumentParser:
    from dinolite.jobs import JOB_KINDS  # names only: no torch import

    p = argparse.ArgumentParser(prog="python -m launch.slurm", description=__doc__.split("\n\n")[0],
                                usage=f"%(prog)s [{{{','.join(JOB_KINDS)}}}] [options] [key=value ...]",
                                epilog="The first word is the kind of run (default: pretrain); the options and "
                                       "key=value overrides follow it.")
    p.add_argument("--config", default=None,
                   help="recipe name or YAML path (default: quickstart; finetune_fmnist for finetune)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0, help="one task per GPU; 0 runs CPU tasks (gloo)")
    p.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node, or 1 on CPU")
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--mem-per-gpu", default=None, help="e.g. 40G")
    p.add_argument("--mem-gb", type=int, default=None, help="memory per node, in GB")
    p.add_argument("--timeout-min", type=int, default=60 * 24)
    p.add_argument("--max-requeues", type=int, default=20, help="time-outs the job may be requeued after")
    p.add_argument("--signal-delay-s", type=int, default=120, help="seconds of warning before the time limit")
    p.add_argument("--job-name", default=None, help="default: the recipe name (fine-tuning: recipe-method)")
    p.add_argument("--local", action="store_true", help="submitit's local executor on this machine, no SLURM")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def parse(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """The kind of run named by the first word (``pretrain`` when there is none) and the options after it."""
    from dinolite.errors import UserError
    from dinolite.jobs import DEFAULT_KIND, JOB_KINDS

    kind = DEFAULT_KIND
    if argv and argv[0] in JOB_KINDS:
        kind, argv = argv[0], argv[1:]
    args = build_parser().parse_args(argv)
    misplaced = [a for a in args.overrides if a in JOB_KINDS]  # a bare word among the key=value overrides
    if misplaced:
        raise UserError(f"the kind of run goes first: python -m launch.slurm {misplaced[0]} [options] [key=value ...]")
    return kind, args


def _executor(args: argparse.Namespace, folder: Path, tasks: int, name: str):
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if args.local else "slurm",
                                     slurm_max_num_timeout=args.max_requeues)
    if not args.local:
        # A rank that dies takes the job step down with it, instead of leaving the others waiting
        # for it in a collective until the time limit.
        executor.update_parameters(slurm_srun_args=["--kill-on-bad-exit=1"])
    params = dict(nodes=args.nodes, tasks_per_node=tasks, timeout_min=args.timeout_min, name=name)
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if not args.local:
        slurm = dict(slurm_partition=args.partition, slurm_account=args.account, slurm_qos=args.qos,
                     slurm_constraint=args.constraint, slurm_mem_per_gpu=args.mem_per_gpu,
                     slurm_signal_delay_s=args.signal_delay_s)
        params.update({k: v for k, v in slurm.items() if v is not None})
    executor.update_parameters(**params)
    return executor


SLURM_TOOLS = ("sbatch", "srun", "sinfo")


def check_slurm() -> None:
    """The SLURM client tools are installed and the cluster answers; checked before anything is written."""
    from dinolite.errors import UserError

    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        raise UserError(f"no SLURM client here ({', '.join(missing)} not found on PATH): run on a login node of the "
                        f"cluster, or pass --local to run on this machine")
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError("the SLURM cluster does not answer (sinfo timed out after 30 s): check that slurmctld "
                        "runs and SLURM_CONF points at its config") from None
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or ["no message"])[0]
        raise UserError(f"the SLURM cluster does not answer (sinfo: {said}): check that slurmctld runs and "
                        f"SLURM_CONF points at its config") from None


def check_weights(kind: JobKind, cfg: Any) -> None:
    """The input weights the config names exist here (a path mistake found now, not after waiting in the queue)."""
    from dinolite.errors import UserError
    from dinolite.jobs import get_key, is_local_path

    for key in kind.weights:
        value = get_key(cfg, key)
        if is_local_path(value) and not Path(value).exists():
            raise UserError(f"{key} {value} not found: pass {key}=RUN_DIR, CHECKPOINT, EXPORT"
                            + (" or timm:NAME" if key == "init" else ""))


def submit(argv: list[str] | None = None):
    """Validate the config, prepare the run directory, submit; returns the submitit job."""
    from submitit.core.utils import FailedJobError

    from dinolite.config import as_dict
    from dinolite.engine.runtime import per_rank_batch
    from dinolite.errors import UserError
    from dinolite.jobs import JOB_KINDS, Job, absolute_paths

    kind_name, args = parse(sys.argv[1:] if argv is None else list(argv))
    kind = JOB_KINDS[kind_name]
    if args.nodes < 1 or args.gpus_per_node < 0:
        raise UserError("--nodes must be >= 1 and --gpus-per-node >= 0")
    tasks = args.tasks_per_node or args.gpus_per_node or 1
    if args.gpus_per_node and tasks != args.gpus_per_node:
        raise UserError(f"--tasks-per-node {tasks} with --gpus-per-node {args.gpus_per_node}: "
                        f"dinolite runs one process per GPU; drop --tasks-per-node")
    cfg, note = _load(kind_name, kind, args.config, args.overrides)
    absolute_paths(kind, cfg)  # the nodes may start in another directory
    check_weights(kind, cfg)
    world = args.nodes * tasks
    per_rank_batch(cfg.optim.batch_size, world)  # fails here, before anything is queued
    if args.gpus_per_node == 0 and cfg.train.device == "cuda":
        raise UserError("train.device=cuda with --gpus-per-node 0: pass --gpus-per-node N, or train.device=cpu")
    if args.gpus_per_node == 0:
        cfg.train.device = "cpu"
    if not args.local:
        check_slurm()
    new_run = not Path(cfg.train.output_dir).exists()
    run_dir = kind.prepare_run_dir(cfg, True).path
    logs = run_dir / "slurm"
    before = set(logs.glob("*.pkl")) if logs.is_dir() else set()
    executor = _executor(args, logs, tasks, args.job_name or kind.job_name(cfg))
    try:
        job = executor.submit(Job(kind_name, as_dict(cfg)))
    except FailedJobError as err:  # sbatch refused the job: its own message says why
        if new_run:  # leave nothing behind for a job that never existed
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for stray in set(logs.glob("*.pkl")) - before:
                stray.unlink(missing_ok=True)
        lines = [line.strip() for line in str(err).splitlines() if "error:" in line]
        raise UserError(f"sbatch refused the job: {(lines or [str(err).strip()])[0]} "
                        f"(check --partition/--account/--qos against `sinfo` and `sacctmgr show assoc`)") from None
    record = {"job_id": job.job_id, "kind": kind_name, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "nodes": args.nodes, "tasks_per_node": tasks, "gpus_per_node": args.gpus_per_node,
              "partition": args.partition, "stdout": str(job.paths.stdout).replace("%t", "0"),
              "stderr": str(job.paths.stderr).replace("%t", "0"), "argv": sys.argv[1:] if argv is None else list(argv)}
    with open(run_dir / "slurm_jobs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if note:
        print(note, flush=True)
    return job


def _load(kind_name: str, kind: Any, recipe: str | None, overrides: list[str]) -> tuple[Any, str]:
    """The command's own loader (its checks, its default run directory) and the note on the run length. As
    ``dinolite pretrain`` does (``config.load_command_config``), a typed optim.epochs / optim.total_steps replaces
    the recipe's time budget in the config the job gets (a typed budget beside a typed length is refused here,
    before anything is written or queued). Fine-tuning has no time budget: its length is always its recipe's and
    overrides' optim.epochs; distillation follows pretraining."""
    if kind_name in ("pretrain", "distill"):
        from dinolite.config import load_command_config

        return load_command_config(recipe, overrides, distill=kind_name == "distill")
    return kind.load(recipe, overrides), ""


def main(argv: list[str] | None = None) -> int:
    from dinolite.errors import UserError

    try:
        job = submit(argv)
    except UserError as err:
        print(f"launch.slurm: error: {err}", file=sys.stderr)
        return 2
    print(f"submitted job {job.job_id} ({job.paths.folder})\n"
          f"  logs: {job.paths.stdout} and {job.paths.stderr}\n"
          f"  follow with: tail -f {str(job.paths.stderr).replace('%t', '0')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
