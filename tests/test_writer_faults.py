"""The writers of the reuse paths (``export`` in the timm layout and as ONNX, ``embed``, a distillation's student
exports, a continued run's first checkpoint) under a disk that fills up, a kill -9 at the worst moment, a folder
that holds other files and a second process on the same folder: each ends with its old files intact or its new
files whole, never a finished-looking half. Real processes; the full disks are real small tmpfs mounts in a
private mount namespace, as in ``tests/test_files.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from dinolite.cli import main
from tests.helpers import tiny_overrides

# Mount a tmpfs of $SIZE on $0, fill it up to $FREE bytes of free space, run the command ($2) from the
# repository ($1), then list what is left on the mount (the filler aside) and give the command's exit code.
FULL = """mount -t tmpfs -o size=$SIZE tmpfs "$0" || exit 99
python3 -c "import os, shutil, sys; d = sys.argv[1]; f = open(d + '/.filler', 'wb'); \
f.write(bytes(max(0, shutil.disk_usage(d).free - int(sys.argv[2])))); f.close()" "$0" "$FREE" || exit 97
cd "$1" || exit 98
eval "$2"; code=$?
echo "files: $(cd "$0" && find . -mindepth 1 ! -name .filler | sort | tr '\\n' ' ')"
exit $code"""


def on_a_full_disk(tmp_path, command: str, free: int, size: str = "2m") -> tuple[subprocess.CompletedProcess, str]:
    """Run ``command`` (``$0`` is the mount) on a ``size`` tmpfs left with ``free`` bytes; returns the process and
    the files it left on the mount."""
    small = tmp_path / "small"
    small.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIZE": size, "FREE": str(free), "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", FULL, str(small), os.getcwd(), command],
                          capture_output=True, text=True, timeout=300, env=env)
    left = proc.stdout.rsplit("files:", 1)[-1].strip()
    return proc, left


def cli(*args: str) -> str:
    return " ".join([sys.executable, "-m", "dinolite.cli", *map(str, args)])


def one_line_write_failure(proc: subprocess.CompletedProcess, path: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])  # never 135 (SIGBUS) or a traceback
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"could not write {path}" in lines[0] and "No space left on device" in lines[0], lines


@pytest.mark.parametrize("writer", ["export", pytest.param("export --onnx", marks=pytest.mark.slow), "embed"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tiny_run, tmp_path, writer):
    """40 kB free: the export (about 110 kB of weights) and the embedding (128 x 32 float32 and their index) do
    not fit. embed writes its features through a memory map: its blocks are reserved first, so the full disk
    is the one-line error, not a SIGBUS."""
    command, *flags = writer.split()
    extra = ["--data", "num_workers=0", "--no-progress"] if command == "embed" else []
    free = 40_000 if command == "export" else 8_000
    proc, left = on_a_full_disk(tmp_path, cli(command, tiny_run, "--out", '"$0/out"', *flags, *extra), free)
    one_line_write_failure(proc, str(tmp_path / "small" / "out"))  # the folder asked for, not a temporary one
    assert left == "", left


def test_a_continued_runs_first_checkpoint_on_a_full_disk_is_one_line(tiny_run, tmp_path):
    """A run continued from ``tiny_run`` on a 600 kB disk: its first checkpoint (about 630 kB) does not fit; the
    error names it, and no checkpoint (whole or partial) is left to resume from."""
    run = tmp_path / "small" / "run"
    args = tiny_overrides(run, **{"model.init": str(tiny_run), "eval.knn_at_end": False, "train.threads": 1,
                                  "eval.knn_random_init": False, "eval.knn_pixels": False})
    proc, left = on_a_full_disk(tmp_path, cli("pretrain", "--no-progress", *args), 10**9, size="600k")
    one_line_write_failure(proc, f"{run}/checkpoint-")
    assert ".pt" not in left, left
    assert load_file(str(tiny_run / "teacher_backbone.safetensors"))  # the source run is untouched


# ---- kill -9 at the worst moment ----------------------------------------------------------------------------

KILLED_EXPORT = """
import os, signal, sys
import dinolite.export as export
from dinolite.weights import resolve
real = export.write_text
def die(path, text):  # the weights are written, the JSON not yet: the worst moment to die
    real(path, text)
    os.kill(os.getpid(), signal.SIGKILL)
export.write_text = die
export.export_backbone(resolve(sys.argv[1], sys.argv[3]), sys.argv[2], replace=sys.argv[4] == "replace")
"""


@pytest.mark.parametrize("case", ["new export", "a student export replaced"])
def test_an_export_killed_mid_write_leaves_the_old_folder_or_none(tiny_run, tmp_path, case):
    """``export`` into a new folder, and a distillation's student export replacing the one of a shorter run
    (``replace``): killed by SIGKILL after the weights and before the JSON. The folder is missing or holds the
    old export whole; the next export cleans what the dead one left and writes the new one whole."""
    out = tmp_path / "students" / "s"
    if case != "new export":
        assert main(["export", str(tiny_run), "--out", str(out), "--checkpoint-key", "student"]) == 0
    old = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else None
    mode = "replace" if case != "new export" else "new"
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tiny_run), str(out), "teacher", mode],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    if old is None:
        assert not out.exists()
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # the dead process's temporary folder
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT.replace("export.write_text = die", ""),
                           str(tiny_run), str(out), "teacher", mode], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["s"]  # nothing left of the dead one
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert load_file(str(out / "model.safetensors")).keys()


def test_a_student_export_never_replaces_a_folder_holding_other_files(tiny_run, tmp_path, capsys):
    from dinolite.errors import UserError
    from dinolite.export import export_backbone
    from dinolite.weights import resolve

    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds different files"):
        export_backbone(resolve(tiny_run), out, replace=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# ---- a second process on the same folder ----------------------------------------------------------------------

def together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start every command at once and wait for all."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c in commands]
    out = []
    for c, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_two_exports_into_one_folder_at_once(tiny_run, tmp_path):
    """The same export twice at once: both succeed, one whole export; two different ones: one is refused in one
    line, and the folder holds the other whole."""
    base = [sys.executable, "-m", "dinolite.cli", "export", str(tiny_run)]
    same = tmp_path / "same"
    runs = together([*base, "--out", str(same)], [*base, "--out", str(same)])
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]
    assert sorted(p.name for p in same.iterdir()) == ["config.json", "model.safetensors"]
    other = tmp_path / "other"
    runs = together([*base, "--out", str(other)], [*base, "--out", str(other), "--checkpoint-key", "student"])
    assert sorted(r.returncode for r in runs) == [0, 2], [r.stderr for r in runs]
    refused = next(r for r in runs if r.returncode == 2).stderr.strip().splitlines()
    assert len(refused) == 1 and "different files" in refused[0]
    winner = next(r for r in runs if r.returncode == 0).args
    key = "student" if "student" in winner else "teacher"
    from dinolite.weights import resolve

    want = resolve(tiny_run, key).state_dict
    got = load_file(str(other / "model.safetensors"))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "same"]


@pytest.mark.slow
def test_two_embeds_into_one_folder_at_once(tiny_run, tmp_path):
    """The same embedding twice at once: both succeed and the folder holds it whole (the second to finish finds
    the first's rows and keeps them); a different one is refused in one line."""
    base = [sys.executable, "-m", "dinolite.cli", "embed", str(tiny_run), "--no-progress"]
    out = tmp_path / "emb"
    data = ["--data", "num_workers=0", "subset=40"]
    runs = together([*base, "--out", str(out), *data], [*base, "--out", str(out), *data])
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]
    assert sorted(p.name for p in out.iterdir()) == ["embed.json", "features.npy", "index.csv"]
    import numpy as np

    assert np.load(out / "features.npy").shape == (40, 32)
    runs = together([*base, "--out", str(out), *data, "--split", "test"])
    assert runs[0].returncode == 2 and len(runs[0].stderr.strip().splitlines()) == 1
    assert np.load(out / "features.npy").shape == (40, 32)
