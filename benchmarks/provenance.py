"""Where a benchmark figure comes from: the record every benchmark JSON carries beside its figures.

    from provenance import provenance
    record = provenance(recipe="configs/quickstart.yaml", steps_per_s={"fashion-mnist": 1.52})

:func:`provenance` returns a dict of plain JSON values:

- ``command``: the exact command line (``argv`` as a list and shell-quoted as one string) and ``cwd``;
- ``recipe``: the recipe file's path, its sha256 and its text (the resolved run config stays in each
  run's ``config.yaml``; benchmarks that keep it add its hash per run);
- ``git``: ``commit`` (``git rev-parse HEAD``), ``dirty`` (tracked changes or untracked files that git
  does not ignore) and the ``changed`` paths (the first 50), read without taking git's optional locks;
- ``machine``: CPU model (``/proc/cpuinfo``), the AVX flags that decide the speed of this project's
  machine kinds, cores (online, and usable by this process), memory, platform, hostname;
- ``software``: Python, torch (and its default thread count), timm, kornia, numpy, dinolite;
- ``steps_per_s``: what the caller measured (a number, or a dict of them), as given;
- ``started_utc``: when the record was made.

Nothing here changes the repository (git is only read).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AVX_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _git(*args: str, cwd: Path = REPO) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # `git status` then never rewrites the index
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(cwd: Path = REPO) -> dict[str, Any]:
    """``{"commit", "dirty", "changed"}``; commit None outside a git checkout."""
    head = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", cwd=cwd)
    changed = [line[3:] for line in (status or "").splitlines() if line.strip()]
    return {"commit": head.strip() if head else None, "dirty": bool(changed) if status is not None else None,
            "changed": changed[:50]}


def machine() -> dict[str, Any]:
    """The CPU model, its AVX flags, the core counts and memory of this machine."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model is None:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model or platform.processor() or None, "cpu_flags": [f for f in AVX_FLAGS if f in flags],
            "cores": os.cpu_count(), "cores_usable": usable, "memory_gb": memory_gb,
            "platform": platform.platform(), "hostname": socket.gethostname(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def software() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in ("torch", "timm", "kornia", "numpy", "dinolite"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", None)
        except ImportError:
            out[name] = None
    if out["torch"] is not None:
        import torch

        out["torch_threads"] = torch.get_num_threads()
    return out


def recipe_record(recipe: str | Path | None) -> dict[str, Any] | None:
    """Path (relative to the repository when inside it), sha256 and text of a recipe file."""
    if recipe is None:
        return None
    path = Path(recipe)
    if not path.is_absolute() and not path.is_file():
        path = REPO / path
    data = path.read_bytes()
    shown = path.resolve()
    try:
        shown = shown.relative_to(REPO)
    except ValueError:
        pass
    return {"path": str(shown), "sha256": hashlib.sha256(data).hexdigest(), "text": data.decode()}


def command(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line as run: ``python benchmarks/x.py --flag ...`` (argv as given) and the working directory."""
    args = list(sys.argv if argv is None else argv)
    full = [Path(sys.executable).name, *args]
    return {"argv": full, "line": shlex.join(full), "cwd": os.getcwd()}


def provenance(recipe: str | Path | None = "configs/quickstart.yaml", steps_per_s: Any = None,
               argv: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance record of a benchmark result (see the module docstring); ``extra`` keys are added as given."""
    return {"command": command(argv), "recipe": recipe_record(recipe), "git": git_state(), "machine": machine(),
            "software": software(), "steps_per_s": steps_per_s,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}



def write_result(path: str | Path, record: dict) -> None:
    """Write a benchmark's JSON result (its folder made) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    print(json.dumps(provenance(), indent=1))
