"""The one way a run writes a file: temporary file in the same folder, fsync, rename, fsync of the folder.

A crash at any point leaves the old file or the new one under the final name, never a part of one,
and the rename survives a power cut (the folder is synced too). A write that fails (disk full, no
permission, read-only filesystem) raises :class:`WriteFailed`, one line naming the path and the free
space; the temporary file is removed and the previous file is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO


class WriteFailed(RuntimeError):
    """A file of the run could not be written; the CLI prints the message alone and exits 1."""


def free_space(folder: Path) -> str:
    """The free space of ``folder``'s filesystem, for error messages ("12.3 MB free")."""
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "free space unknown"
    units = ["B", "kB", "MB", "GB", "TB"]
    unit = 0
    while free >= 1000 and unit < len(units) - 1:
        free, unit = free / 1000, unit + 1
    return f"{free:.0f} B free" if unit == 0 else f"{free:.1f} {units[unit]} free"


def write_failure(path: Path, err: Exception) -> WriteFailed:
    """The one-line error of a failed write of ``path``: the reason, the free space, what to do."""
    reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return WriteFailed(f"could not write {path}: {reason} ({free_space(path.parent)} on its filesystem): "
                       f"free some space or fix the folder's permissions, then run the same command to "
                       f"resume; the files written before are intact")


def sync_path(path: Path) -> None:
    """Flush a file's or a folder's data to disk (a folder: its entries, so a rename in it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def allocate(path: Path) -> None:
    """Reserve the disk blocks of ``path`` up to its length, so that writes through a memory map of it cannot
    meet a full disk (a page the disk cannot back kills the process with SIGBUS); raises OSError (ENOSPC) when
    the space is not there."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], mode: int = 0o644) -> Path:
    """Write ``path`` through ``write(file)`` (a binary file object), all or nothing; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        sync_path(path.parent)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)  # first, so the free space reported is what the user has
        raise write_failure(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def _alive(pid: str) -> bool:
    """Whether process ``pid`` runs (a name that is not a process id is someone else's: counted as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


def recover_folder(out: Path) -> None:
    """What a killed :func:`write_folder` of ``out`` left beside it: a temporary folder of a process that is gone
    is removed; an old folder moved aside is put back when ``out`` is missing (killed between the two renames),
    removed otherwise."""
    for left in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind, _, pid = left.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("tmp", "old") or _alive(pid):
            continue
        if kind == "old" and not out.exists():
            os.replace(left, out)
        else:
            shutil.rmtree(left, ignore_errors=True)


class FolderTaken(FileExistsError):
    """The folder :func:`write_folder` was to publish holds files already (another process published first)."""


def write_folder(out: str | Path, fill: Callable[[Path], object], replace: bool = False) -> Path:
    """Make the folder ``out`` through ``fill(tmp)``, all or nothing: ``fill`` writes into a hidden temporary folder
    beside ``out``, which is then renamed to ``out`` (a missing or empty folder), so ``out`` never holds part of
    the files. ``out`` holding files already raises :class:`FolderTaken`, unless ``replace``: then the old folder
    is moved aside, the new one renamed in, and the old one removed. A failed write raises :class:`WriteFailed`;
    the temporary folder and any parent folder made here are removed whatever happens."""
    out = Path(out)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    aside = out.parent / f".{out.name}.old-{os.getpid()}"
    done = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        recover_folder(out)
        tmp.mkdir()
        fill(tmp)
        sync_path(tmp)
        if replace and out.is_dir() and any(out.iterdir()):
            os.replace(out, aside)
            os.replace(tmp, out)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out)  # atomic, and refused by the system when another process filled ``out``
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise FolderTaken(f"{out} holds files already") from None
                raise
        sync_path(out.parent)
        done = True
    except FolderTaken:
        raise
    except WriteFailed as err:  # a file of ``fill``: named where the user will look for it, not in the temporary
        raise WriteFailed(str(err).replace(str(tmp), str(out))) from None
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failure(out, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return out
