"""The writers of the reuse paths (``export`` in the timm layout and as ONNX, ``embed``, a distillation's student
exports, a continued run's first checkpoint) under a disk that fills up, a kill -9 at the worst moment, a folder
that holds other files and a second process on the same folder: each ends with its old files intact or its new
files whole, never a finished-looking half. Real processes; the full disks are real small tmpfs mounts in a
private mount namespace (``tests.helpers.on_a_small_disk``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from dinolite.cli import main
from tests.forked import Forked
from tests.helpers import cli, on_a_small_disk, tiny_overrides


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
    proc, left = on_a_small_disk(tmp_path, cli(command, tiny_run, "--out", '"$0/out"', *flags, *extra), "2m", free)
    one_line_write_failure(proc, str(tmp_path / "small" / "out"))  # the folder asked for, not a temporary one
    assert left == "", left


def test_a_continued_runs_first_checkpoint_on_a_full_disk_is_one_line(tiny_run, tmp_path):
    """A run continued from ``tiny_run`` on a 600 kB disk: its first checkpoint (about 630 kB) does not fit; the
    error names it, and no checkpoint (whole or partial) is left to resume from."""
    run = tmp_path / "small" / "run"
    args = tiny_overrides(run, **{"model.init": str(tiny_run), "eval.knn_at_end": False, "train.threads": 1,
                                  "eval.knn_random_init": False, "eval.knn_pixels": False})
    proc, left = on_a_small_disk(tmp_path, cli("pretrain", "--no-progress", *args), "600k")
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
    """Start every ``dinolite`` command at once, each a process forked ready-imported (tests/forked.py: within
    milliseconds of each other, no start-up to spread them), and wait for all."""
    procs = [Forked(c) for c in commands]
    out = []
    for c, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_two_exports_into_one_folder_at_once(tiny_run, tmp_path):
    """The same export twice at once: both succeed, one whole export; two different ones: one is refused in one
    line, and the folder holds the other whole."""
    base = ["export", str(tiny_run)]
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
def test_two_embeds_into_one_folder_at_once(tiny_run, tmp_path, capsys):
    """The same embedding twice at once: both succeed and the folder holds it whole (the second to finish finds
    the first's rows and keeps them); a different one is refused in one line."""
    base = ["embed", str(tiny_run), "--no-progress"]
    out = tmp_path / "emb"
    data = ["--data", "num_workers=0", "subset=40"]
    runs = together([*base, "--out", str(out), *data], [*base, "--out", str(out), *data])
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]
    assert sorted(p.name for p in out.iterdir()) == ["embed.json", "features.npy", "index.csv"]
    import numpy as np

    assert np.load(out / "features.npy").shape == (40, 32)
    capsys.readouterr()
    assert main([*base, "--out", str(out), *data, "--split", "test"]) == 2  # in this process
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert np.load(out / "features.npy").shape == (40, 32)


# ---- a continued run's first checkpoint (dinolite pretrain model.init=RUN into a new output_dir) ----------------

def continued(run, **extra) -> list[str]:
    """The overrides of a tiny run into ``run`` (``model.init`` in ``extra`` continues another): 2 epochs of 4
    steps, a checkpoint at each epoch's end (steps 4 and 8)."""
    return tiny_overrides(run, **{"eval.knn_at_end": False, "train.threads": 1, "eval.knn_random_init": False,
                                  "eval.knn_pixels": False, **extra})


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Run ``dinolite pretrain ARGS`` and SIGKILL it at its first checkpoint: "mid-write" when half of the file is in
# the temporary file, "written" just after the rename; "hold" instead waits there until the file $GO exists.
AT_FIRST_CHECKPOINT = """
import io, os, signal, sys, time
import torch
from dinolite.engine import checkpoint
from dinolite.files import atomic_write
moment, args = sys.argv[1], sys.argv[2:]
def save(obj, path):
    if moment == "mid-write":
        buf = io.BytesIO()
        torch.save(obj, buf)
        def half(f):
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
            f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write(path, half)
    atomic_write(path, lambda f: torch.save(obj, f))
    if moment == "written":
        os.kill(os.getpid(), signal.SIGKILL)
    while moment == "hold" and not os.path.exists(os.environ["GO"]):
        time.sleep(0.2)
checkpoint.atomic_save = save
from dinolite.cli import main
sys.exit(main(["pretrain", "--no-progress", *args]))
"""


def metric_steps(run) -> list[int]:
    import json

    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


@pytest.mark.parametrize("moment", ["mid-write", "written"])
def test_a_continued_run_killed_at_its_first_checkpoint_resumes(tiny_run, tmp_path, moment):
    """SIGKILL while the first checkpoint is written (no checkpoint: the same command starts again from
    ``model.init``) or just after (the same command resumes from it, not from ``model.init``). Either way the
    rerun ends whole, each step logged once, nothing of the dead process left, the source run byte-identical."""
    source = snapshot(tiny_run)
    run = tmp_path / "run"
    args = continued(run, **{"model.init": str(tiny_run)})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", AT_FIRST_CHECKPOINT, moment, *args], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == -9, proc.stderr[-3000:]
    names = sorted(p.name for p in run.iterdir())
    if moment == "mid-write":
        assert "checkpoint-00000004.pt" not in names, names
        assert any(n.startswith(".checkpoint-00000004.pt.tmp-") for n in names), names  # the half-written one
    else:
        assert "checkpoint-00000004.pt" in names
    done = subprocess.run([sys.executable, "-m", "dinolite.cli", "pretrain", "--no-progress", *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("resumed from" in done.stdout) == (moment == "written"), done.stdout
    assert (str(tiny_run) in done.stdout) == (moment == "mid-write"), done.stdout  # the init line of a new run
    from dinolite.engine.checkpoint import latest_valid

    path, state = latest_valid(run)
    assert path.name == "checkpoint-00000008.pt" and state["step"] == 8
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert metric_steps(run) == list(range(1, 9))
    assert snapshot(tiny_run) == source


def test_a_continued_run_into_a_folder_holding_other_files_leaves_them(tiny_run, tmp_path, capsys):
    """An output_dir that holds the user's own files (a hidden ``.tmp`` one too) is used and its files are left
    as they were; one that holds another tool's config.yaml is refused in one line."""
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    (run / "data" / "a.bin").write_bytes(bytes(range(256)))
    (run / ".draft.tmp").write_text("mine too")
    (run / ".plan.tmp-1").mkdir()
    mine = snapshot(run)
    assert main(["pretrain", "--no-progress", *continued(run, **{"model.init": str(tiny_run),
                                                                 "optim.epochs": 1})]) == 0
    after = snapshot(run)
    assert {k: after[k] for k in mine} == mine and (run / ".plan.tmp-1").is_dir()
    assert "checkpoint-00000004.pt" in after
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("learning_rate: 3\n")
    capsys.readouterr()
    assert main(["pretrain", "--no-progress", *continued(other, **{"model.init": str(tiny_run)})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.yaml" in err[0], err
    assert {p.name for p in other.iterdir()} <= {"config.yaml", ".lock"}  # the lock file: pid and host alone
    assert (other / "config.yaml").read_text() == "learning_rate: 3\n"


def test_a_second_run_on_the_same_output_dir_is_refused(tiny_run, tmp_path, capsys):
    """A continued run holds its output_dir's lock: the same command started again (in this process: no start-up)
    while the first waits at its first checkpoint is refused in one line naming the first, writes nothing, and the
    first ends whole."""
    run = tmp_path / "run"
    args = continued(run, **{"model.init": str(tiny_run)})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GO": str(tmp_path / "go")}
    first = Forked(["hold", *args], env, script=AT_FIRST_CHECKPOINT)  # no start-up: forked ready-imported
    try:
        deadline = time.monotonic() + 600
        while not (run / "checkpoint-00000004.pt").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run / "checkpoint-00000004.pt").exists(), first.communicate(timeout=60)
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        capsys.readouterr()
        assert main(["pretrain", "--no-progress", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"{run} is in use by pid {first.pid}" in lines[0], lines
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    finally:
        (tmp_path / "go").touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    from dinolite.engine.checkpoint import latest_valid

    assert latest_valid(run)[1]["step"] == 8 and metric_steps(run) == list(range(1, 9))


# ---- embed killed mid-write ------------------------------------------------------------------------------------

KILLED_EMBED = """
import os, signal, sys
from dinolite.eval import embed_parts
real = embed_parts.PartWriter.add
def die(self, *a):  # the first batch's rows are in the memory map, the rest not yet
    real(self, *a)
    os.kill(os.getpid(), signal.SIGKILL)
embed_parts.PartWriter.add = die
from dinolite.cli import main
sys.exit(main(["embed", *sys.argv[1:]]))
"""


def test_an_embed_killed_mid_write_leaves_nothing_and_the_rerun_gives_the_same_rows(tiny_run, tmp_path):
    """SIGKILL after the first batch of rows: ``--out`` does not exist; the same command again removes what the
    dead one left and writes the rows ``dinolite knn`` scores."""
    import numpy as np
    import torch

    from tests.eval.test_embed import knn_features, read_embedding

    out = tmp_path / "emb"
    data = ["num_workers=0", "subset=40", "eval.batch_size=16"]
    args = [str(tiny_run), "--out", str(out), "--no-progress", "--data", *data]
    proc = subprocess.run([sys.executable, "-c", KILLED_EMBED, *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".emb.tmp-")]
    assert main(["embed", *args]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]  # nothing left of the dead one
    got, rows, info = read_embedding(out)
    assert got.shape == (40, 32) and info["count"] == 40 and [r["index"] for r in rows] == [str(i) for i in range(40)]
    torch.testing.assert_close(got, knn_features(tiny_run, "train", data)[0], rtol=0, atol=1e-6)
    assert np.isfinite(got.numpy()).all()


# ---- ONNX export: killed mid-write, and beside a second process --------------------------------------------------

KILLED_ONNX = """
import os, signal, sys
from pathlib import Path
import dinolite.export as export
real = export.atomic_write
def die(path, write, *a):  # the weights and the JSON are written, the graph half
    if Path(path).name == "model.onnx":
        def half(f):
            f.write(b"\\x08" * 1000); f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, half, *a)
    return real(path, write, *a)
export.atomic_write = die
from dinolite.cli import main
sys.exit(main(["export", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_an_onnx_export_killed_mid_write_leaves_nothing_and_the_rerun_is_whole(tiny_run, tmp_path):
    import onnx

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_ONNX, str(tiny_run), "--out", str(out), "--onnx"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert main(["export", str(tiny_run), "--out", str(out), "--onnx"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "model.safetensors"]
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))


@pytest.mark.slow
def test_an_export_and_an_onnx_export_into_one_folder_at_once(tiny_run, tmp_path):
    """Whichever publishes first, both succeed and the folder ends with the weights and the graph, whole."""
    import onnx

    base = ["export", str(tiny_run), "--out", str(tmp_path / "out")]
    runs = together(base, [*base, "--onnx"])
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    out = tmp_path / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "model.safetensors"]
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    from dinolite.weights import resolve

    want, got = resolve(tiny_run).state_dict, load_file(str(out / "model.safetensors"))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
