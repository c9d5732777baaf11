"""The one atomic write: all or nothing; a failed write is one line and exit 1, and what was written
before stays readable. The filesystem cases use real small tmpfs mounts (``tests.helpers.on_a_small_disk``)."""

from __future__ import annotations

import sys

import pytest

from dinolite.files import WriteFailed, atomic_write, write_text
from tests.helpers import on_a_small_disk, tiny_overrides


def loads(run) -> str:
    """The shell command that prints which checkpoint of ``run`` loads, at which step."""
    return (f"python3 -c \"from dinolite.engine.checkpoint import latest_valid; "
            f"p, s = latest_valid('{run}'); print('loads:', p.name, s['step'])\"")


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
    proc, left = on_a_small_disk(tmp_path, pretrain_command(run), "1000k", report=loads(run))
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"could not write {run}/checkpoint-00000008.pt: No space left on device (" in lines[0], lines[0]
    assert "free on its filesystem" in lines[0]
    assert "loads: checkpoint-00000004.pt 4" in proc.stdout, proc.stdout
    assert ".tmp" not in left, left  # the half-written temporary file was removed


@pytest.mark.slow
def test_a_read_only_filesystem_is_one_line(tmp_path):
    """A run that stopped at step 4, resumed after its filesystem became read-only."""
    run = tmp_path / "small" / "run"
    first = pretrain_command(run, **{"train.stop_after_steps": 4})
    proc, _ = on_a_small_disk(tmp_path, f'{first} && mount -o remount,ro "$0" && {pretrain_command(run)}', "4m",
                              report=loads(run))
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "could not write" in lines[0] and "Read-only file system" in lines[0], lines[0]
    assert "loads: checkpoint-00000004.pt 4" in proc.stdout, proc.stdout
