"""benchmarks/quickstart.py without training: the busy process it adds, and its JSON keyed by --name."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbours
    try:
        spec = importlib.util.spec_from_file_location("quickstart_benchmark", BENCHMARKS / "quickstart.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_busy_process_is_pinned_to_one_core_and_killed_at_the_end():
    bench = load()
    busy = bench.BusyCore(0.2, 0, time.time())
    deadline = time.time() + 10
    while busy.proc is None and time.time() < deadline:
        time.sleep(0.05)
    assert busy.proc is not None and busy.proc.poll() is None
    status = Path(f"/proc/{busy.proc.pid}/status").read_text()
    allowed = next(line.split(":")[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
    assert allowed == "0"
    busy.stop()
    assert busy.proc.poll() is not None
    record = busy.record()
    assert record["core"] == 0 and 0.2 <= record["started_at_s"] <= record["ended_at_s"]


def test_a_run_that_ends_first_never_starts_it():
    bench = load()
    busy = bench.BusyCore(30, 0, time.time())
    busy.stop()
    assert busy.proc is None and busy.record()["started_at_s"] is None


def test_a_rerun_replaces_only_its_own_name(tmp_path, monkeypatch):
    bench = load()
    monkeypatch.setattr(bench, "measure", lambda args, argv: {"name": args.name, "busy_after_s": args.busy_after,
                                                               "returncode": 0})
    out = tmp_path / "quickstart.json"
    assert bench.main(["--json", str(out)]) == 0
    assert bench.main(["--busy-after", "120", "--json", str(out)]) == 0
    assert bench.main(["--name", "idle", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert sorted(saved) == ["busy", "idle"] and saved["busy"]["busy_after_s"] == 120


def test_a_folder_that_is_not_its_run_is_left_alone(tmp_path):
    bench = load()
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not a run of this benchmark"):
        bench.fresh_run_dir(tmp_path)
    assert (tmp_path / "mine.txt").is_file()
    run = tmp_path / "run"
    run.mkdir()
    (run / bench.LOG).write_text("")
    (run / "checkpoint.pt").write_text("")
    bench.fresh_run_dir(run)
    assert run.is_dir() and not any(run.iterdir())
