"""The README's first command, measured: ``dinolite pretrain`` with the default recipe (configs/quickstart.yaml,
its 10-minute budget), optionally with a competing CPU-bound process on one core from a given second on.
Writes its figures and their provenance under a name in benchmarks/results/quickstart.json.

    python benchmarks/quickstart.py --name idle                      # the machine otherwise idle
    python benchmarks/quickstart.py --name busy --busy-after 120     # a busy process on core 0 from 120 s on

The run is ``dinolite pretrain --no-progress train.output_dir=<--out>`` plus any ``--set key=value``
overrides, in its own process; its printed lines are shown as they come (with the second each arrived)
and kept. ``--busy-after S`` starts, S seconds after the run started, ``python -c "while True: pass"``
pinned to one core (``taskset -c 0``, or ``os.sched_setaffinity`` in the child where taskset is missing),
which runs until the run ends and is then killed.

The result (the JSON is a dict of results keyed by ``--name``; a rerun replaces only its own key) holds:
the budget and the wall time (``overshoot_pct``: how far past the budget, negative when within, from the
process's start; ``run_s`` and ``overshoot_pct_run`` by dinolite's own clock, which starts after the imports), the
steps planned at the start, the final step count after any re-plan and the steps done, s/step as timed
at the start and as measured over the training alone, the final k-NN line's three figures (teacher,
random init, raw pixels) with the gaps, the monitor's warnings, the online k-NN, the ``replan`` records
of metrics.jsonl, the busy process's timing (``busy_after_s``, ``busy``), the printed lines, the resolved
config.yaml, and ``provenance`` (benchmarks/provenance.py: recipe, commit, machine, steps/s, command line).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from run_record import parse_output, summarize  # noqa: E402

RECIPE = "configs/quickstart.yaml"
LOG = "benchmark-stdout.log"  # written in the run directory: marks it as this benchmark's, to be replaced on a rerun
SPIN = "while True: pass"


def dinolite_command() -> list[str]:
    """``dinolite`` as the README runs it: the entry point beside this Python, else ``python -m dinolite.cli``."""
    script = Path(sys.executable).with_name("dinolite")
    if script.is_file():
        return [str(script)]
    found = shutil.which("dinolite")
    return [found] if found else [sys.executable, "-m", "dinolite.cli"]


def fresh_run_dir(out: Path) -> None:
    """An empty run directory: one this benchmark wrote before is removed (a rerun would resume it)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / LOG).is_file()):
            raise SystemExit(f"{out} exists and is not a run of this benchmark: give another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)


class BusyCore:
    """A CPU-bound process pinned to one core, started ``after`` seconds from ``t0`` (unless stopped first)."""

    def __init__(self, after: float, core: int, t0: float):
        self.after, self.core, self.t0 = after, core, t0
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.method: str | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._timer = threading.Timer(max(0.0, t0 + after - time.time()), self._start)
        self._timer.daemon = True
        self._timer.start()

    def _start(self) -> None:
        with self._lock:
            if self._stopped:
                return
            spin = [sys.executable, "-c", SPIN]
            if shutil.which("taskset"):
                self.method = f"taskset -c {self.core}"
                self.proc = subprocess.Popen(["taskset", "-c", str(self.core), *spin])
            else:
                self.method = f"os.sched_setaffinity(0, {{{self.core}}})"
                core = self.core
                self.proc = subprocess.Popen(spin, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
            self.started_at = time.time() - self.t0
            print(f"[{self.started_at:7.1f} s] benchmark: busy process {self.proc.pid} started on core {self.core} "
                  f"({self.method})", flush=True)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._timer.cancel()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                self.ended_at = time.time() - self.t0

    def record(self) -> dict | None:
        if self.started_at is None:
            return {"core": self.core, "started_at_s": None, "note": "the run ended before the busy process was due"}
        return {"core": self.core, "method": self.method, "started_at_s": round(self.started_at, 1),
                "ended_at_s": None if self.ended_at is None else round(self.ended_at, 1),
                "seconds": None if self.ended_at is None else round(self.ended_at - self.started_at, 1)}


def run(cmd: list[str], out: Path, busy_after: float | None, core: int) -> tuple[int, float, list, dict | None]:
    """Run ``cmd``, echo and keep its lines with their arrival second; returns (rc, wall s, lines, busy record)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines: list[tuple[float, str]] = []
    with open(out / LOG, "w") as log:
        log.write(shlex.join(cmd) + "\n")
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        busy = BusyCore(busy_after, core, t0) if busy_after is not None else None
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                t = round(time.time() - t0, 1)
                lines.append((t, line))
                log.write(f"[{t:7.1f} s] {line}\n")
                log.flush()
                print(f"[{t:7.1f} s] {line}", flush=True)
            rc = proc.wait()
            wall = time.time() - t0
        finally:
            if busy is not None:
                busy.stop()
            if proc.poll() is None:  # interrupted: the run goes with the benchmark
                proc.kill()
                proc.wait()
    return rc, wall, lines, busy.record() if busy is not None else None


def measure(args, argv: list[str] | None) -> dict:
    out = Path(args.out or f"runs/quickstart-benchmark/{args.name}")
    record = provenance(RECIPE, argv=None if argv is None else ["benchmarks/quickstart.py", *argv])
    fresh_run_dir(out)
    cmd = [*dinolite_command(), "pretrain", "--no-progress", f"train.output_dir={out}", *args.set]
    rc, wall, lines, busy = run(cmd, out, args.busy_after, args.busy_core)
    printed = parse_output([line for _, line in lines])
    s = summarize(out) if (out / "config.yaml").is_file() else {}
    budget_s = (s.get("budget_minutes") or 0) * 60
    teacher, random_init, pixels = printed["teacher_knn"], printed["random_init_knn"], printed["pixels_knn"]
    record["steps_per_s"] = s.get("steps_per_s")
    return {
        "name": args.name, "command": shlex.join(["dinolite", *cmd[len(dinolite_command()):]]), "returncode": rc,
        "budget_minutes": s.get("budget_minutes"), "wall_s": round(wall, 1),
        "overshoot_pct": round(100 * (wall / budget_s - 1), 2) if budget_s else None,
        "run_s": printed["finished"]["seconds"] if printed["finished"] else None,  # dinolite's own clock
        "overshoot_pct_run": round(100 * (printed["finished"]["seconds"] / budget_s - 1), 2)
        if budget_s and printed["finished"] else None,
        "finished": printed["finished"],
        "steps_planned": printed["planned_steps"], "epochs_planned": printed["planned_epochs"],
        "total_steps": s.get("total_steps"), "steps_done": s.get("steps_done"),
        "s_per_step_at_start": printed["planned_s_per_step"], "images_per_s_at_start": printed["planned_images_per_s"],
        "s_per_step_training": s.get("s_per_step"), "steps_per_s": s.get("steps_per_s"), "train_s": s.get("train_s"),
        "threads": s.get("threads"),
        "teacher_knn": teacher, "random_init_knn": random_init, "pixels_knn": pixels,
        "gap_to_pixels": None if teacher is None or pixels is None else round(teacher - pixels, 2),
        "teacher_minus_random": None if teacher is None or random_init is None else round(teacher - random_init, 2),
        "knn_line": printed["knn_line"],
        "warnings": s.get("warnings", []), "online_knn": s.get("online_knn", []),
        "final_entropy": s.get("final_entropy"), "final_kl_uniform": s.get("final_kl_uniform"),
        "replans": s.get("replans", []),
        "busy_after_s": args.busy_after, "busy": busy,
        "lines": [[t, line] for t, line in lines],
        "config_sha256": s.get("config_sha256"),
        "resolved_config": (out / "config.yaml").read_text() if (out / "config.yaml").is_file() else None,
        "run_dir": str(out), "provenance": record,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=None,
                   help="key of this result in the JSON (default: idle, or busy with --busy-after)")
    p.add_argument("--busy-after", type=float, default=None, metavar="SECONDS",
                   help="start a CPU-bound process on one core this many seconds after the run starts")
    p.add_argument("--busy-core", type=int, default=0, help="the core it is pinned to (default 0)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides added to the command")
    p.add_argument("--out", default=None, help="run directory (default runs/quickstart-benchmark/<name>); replaced")
    p.add_argument("--json", default="benchmarks/results/quickstart.json")
    args = p.parse_args(argv)
    args.name = args.name or ("busy" if args.busy_after is not None else "idle")
    result = measure(args, argv)
    path = Path(args.json)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved[args.name] = result  # the other names' results are kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1) + "\n")
    figures = ", ".join(f"{k} {result.get(k)}" for k in ("wall_s", "overshoot_pct", "steps_planned", "total_steps",
                                                      "steps_done", "s_per_step_training", "teacher_knn",
                                                      "random_init_knn", "pixels_knn", "gap_to_pixels"))
    print(f"{args.name}: {figures}; {len(result.get('replans', []))} replan record(s); written to {path}")
    return 0 if result.get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
