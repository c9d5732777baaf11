"""One process owns a run directory for the run's life: an advisory lock on ``<run>/.lock``.

The lock is ``flock`` on an open file, so the operating system releases it when the process dies
(kill -9, a SLURM requeue, a crash): nothing stale is ever left. A second process started on the same
directory stops at once with one line naming the holder (host, pid, since when), before it writes
anything. Under several processes only rank 0 takes it (the others follow rank 0's directory).
Temporary files of writers that died mid-write (``.NAME.tmp-PID``) are removed once the lock is held.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..files import write_failure

LOCK = ".lock"
STALE = re.compile(r"^\..+\.tmp-\d+$")  # files.atomic_write's temporary files: .NAME.tmp-PID


@contextmanager
def run_lock(run_dir: str | Path, take: bool = True):
    """Hold ``run_dir``'s lock inside the ``with`` block (no-op when ``take`` is false: ranks > 0)."""
    if not take:
        yield
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:  # a read-only filesystem, no permission
        raise write_failure(run_dir / LOCK, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{run_dir} is in use by {holder}: wait for that run to end, or pass another "
                            f"train.output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        for stale in run_dir.glob(".*.tmp-*"):  # their writers are gone: we hold the lock
            if STALE.match(stale.name) and stale.is_file() and not stale.is_symlink():  # never a user's own file
                stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock
