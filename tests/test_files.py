"""The one atomic write: all or nothing; a failed write is one line and exit 1, and what was written
before stays readable. The filesystem cases use real small tmpfs mounts, made in a private mount
namespace (``unshare -rm``) so they vanish with the test's process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dinolite.files import WriteFailed, atomic_write, write_text
from tests.helpers import tiny_overrides

# Mount a tmpfs of $SIZE on $0, run the commands after it from the repository ($1), then report what is
# left in the run directory ($RUN) and which step its newest checkpoint loads at, before the mount goes.
SCRIPT = """mount -t tmpfs -o size=$SIZE tmpfs "$0" || exit 99
cd "$1" || exit 98
eval "$2"; code=$?
echo "files: $(ls -A "$RUN" | tr '\\n' ' ')"
python3 -c "from dinolite.engine.checkpoint import latest_valid; p, s = latest_valid('$RUN'); print('loads:', p.name, s['step'])"
exit $code"""


def in_small_filesystem(tmp_path, size: str, command: str) -> subprocess.CompletedProcess:
    small = tmp_path / "small"
    small.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIZE": size, "RUN": str(small / "run")}
    return subprocess.run(["unshare", "-rm", "sh", "-c", SCRIPT, str(small), os.getcwd(), command],
                          capture_output=True, text=True, timeout=300, env=env)


def pretrain_command(run, **extra) -> str:
    args = ["-m", "dinolite.cli", "pretrain", "--no-progress",
            *tiny_overrides(run, **{"eval.knn_at_end": False, "train.threads": 1, "train.log_every": 4, **extra})]
    return " ".join([sys.executable, *args])


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.txt", "first")
    write_text(path, "second")
    assert path.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]

    def half_then_fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteFailed, match=r"could not write .*a\.txt: No space left on device \(.* free on its"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_checkpoint_into_a_full_filesystem_is_one_line_and_the_previous_one_loads(tmp_path):
    """A 1000 kB filesystem: the step-4 checkpoint (about 630 kB) fits, the step-8 one does not."""
    run = tmp_path / "small" / "run"
    proc = in_small_filesystem(tmp_path, "1000k", pretrain_command(run))
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"could not write {run}/checkpoint-00000008.pt: No space left on device (" in lines[0], lines[0]
    assert "free on its filesystem" in lines[0]
    assert "loads: checkpoint-00000004.pt 4" in proc.stdout, proc.stdout
    assert ".tmp" not in proc.stdout  # the half-written temporary file was removed


@pytest.mark.slow
def test_a_read_only_filesystem_is_one_line(tmp_path):
    """A run that stopped at step 4, resumed after its filesystem became read-only."""
    run = tmp_path / "small" / "run"
    first = pretrain_command(run, **{"train.stop_after_steps": 4})
    proc = in_small_filesystem(tmp_path, "4m", f'{first} && mount -o remount,ro "$0" && {pretrain_command(run)}')
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not write" in lines[0] and "Read-only file system" in lines[0], proc.stderr[-3000:]
    assert "loads: checkpoint-00000004.pt 4" in proc.stdout, proc.stdout
