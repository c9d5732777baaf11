"""Real ``dinolite`` processes without the start-up: each is forked from one server process that imported torch,
timm and dinolite once (multiprocessing's forkserver), then runs ``dinolite.cli.main(argv)``. For the tests that
start, kill and race many commands: a Python start-up (3-5 s of imports on CI) per process would dominate them."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

PRELOAD = "tests.forked_preload"
_context = None


def context():
    """The forkserver context, its server started with ``PRELOAD`` imported (once per test process)."""
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload([PRELOAD])
    return _context


def _child(argv: list[str], env: dict[str, str], out: str, err: str, script: str | None) -> None:
    """In the forked process: the given environment and output files, then the command, as ``python -m
    dinolite.cli ARGV`` (or ``python -c SCRIPT ARGV``) would run it; exit handlers run, the interpreter's teardown
    is skipped."""
    import atexit

    from tqdm.std import TqdmDefaultWriteLock

    import dinolite
    from dinolite.cli import main

    # tqdm's lock between processes: none (bars are off), rather than a semaphore that a killed process leaves
    # registered with the server's resource tracker (a warning at the end of the tests)
    TqdmDefaultWriteLock.mp_lock = None

    dinolite.STARTED = time.time()  # this process's start, for train.budget_minutes, not the server's
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)

    try:
        if script is None:
            sys.argv = [str(sys.modules[main.__module__].__file__), *argv]
            code = main(argv)
        else:
            sys.argv = ["-c", *argv]
            exec(script, {"__name__": "__main__"})
            code = 0
    finally:
        atexit._run_exitfuncs()
    sys.exit(code)


class Forked:
    """A started ``dinolite ARGV``, or ``python -c SCRIPT ARGV``; a ``subprocess.Popen`` look-alike: ``pid``,
    ``poll()``, ``wait()``, ``send_signal()``, ``kill()``, ``returncode`` (-9 after SIGKILL), ``communicate()`` ->
    (stdout, stderr)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, script: str | None = None) -> None:
        self.args = list(argv)
        self._dir = tempfile.TemporaryDirectory(prefix="forked-")  # its output, removed with this object
        self._out, self._err = os.path.join(self._dir.name, "out"), os.path.join(self._dir.name, "err")
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env  # the server has one torch thread
        self._proc = context().Process(target=_child, args=(self.args, env, self._out, self._err, script))
        self._proc.start()
        self.pid: int = self._proc.pid  # type: ignore[assignment]

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise TimeoutError(f"dinolite {' '.join(self.args[:1])} still runs after {timeout} s")
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return tuple(Path(p).read_text() if Path(p).exists() else "" for p in (self._out, self._err))  # type: ignore


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """Run ``dinolite ARGV`` in a forked process to its end: (exit code, stdout, stderr)."""
    proc = Forked(argv, env)
    out, err = proc.communicate(timeout)
    return proc.returncode, out, err  # type: ignore[return-value]
