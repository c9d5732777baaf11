"""The collapse monitor on recorded runs: how early it fires on each failing run (as a share of the run's
planned steps) and that it stays quiet on the healthy ones; and the tool that trims a run into a fixture.

    python benchmarks/monitor_fixtures.py              # the table of docs/learning.md, "The monitor", and its JSON
    python benchmarks/monitor_fixtures.py trim RUN_DIR tests/fixtures/NAME.jsonl --expect "uniform collapse" \\
        --run lr1 --note "what the run showed" --command "dinolite pretrain ..."

A fixture (tests/fixtures/*.jsonl) is a header line ``{"header": {...}}`` (the run's planned steps, LR
warm-up, out_dim, centering, random-init online k-NN and its number of queries, the first warning expected
or null, the command) followed by the run's metrics.jsonl records trimmed to what the monitor reads (step,
teacher_entropy, kl_uniform, knn_online; lr to show the schedule). tests/test_monitor.py replays every one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dinolite.pretraining.monitor import CollapseMonitor, monitors_for, replay  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
KEYS = ("step", "teacher_entropy", "kl_uniform", "knn_online", "lr")
PATIENCE, KNN_PATIENCE = 5, 2  # train.collapse_patience's default; CollapseMonitor's k-NN default


def read_fixture(path: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[0]["header"], rows[1:]


def monitor_for(header: dict) -> CollapseMonitor:
    """The monitor ``dinolite pretrain`` builds for the fixture's run (``monitor.monitors_for``, as
    train.Pretrainer.fit calls it); replay feeds it through ``monitor.feed`` as training does."""
    return monitors_for([""], header["out_dim"], PATIENCE, header["warmup"], header["queries"], header["centering"])[""]


def replay_fixture(path: Path) -> tuple[dict, list[dict], list[tuple[int, str]]]:
    header, records = read_fixture(path)
    return header, records, replay(records, monitor_for(header), header.get("knn_online_random_init"))


def kind(warning: str) -> str:
    return warning.split(":")[0]


def at(step: int, total: int) -> str:
    return f"step {step} ({step / total:.0%})"


def trim(run_dir: Path, out: Path, expect: str | None, run: str, note: str, command: str) -> dict:
    """``run_dir``'s metrics.jsonl as a fixture with its header (read from config.yaml and baselines.json)."""
    from dinolite.maths.schedules import span_steps

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    baselines = json.loads((run_dir / "baselines.json").read_text())["values"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "teacher_entropy" in r or "knn_online" in r]
    spe = round(steps[0]["step"] / steps[0]["epoch"])
    o, e, d = cfg["optim"], cfg["eval"], cfg["data"]
    total = int(o["total_steps"])
    test_images = d.get("test_subset") or e["online_queries"]
    header = {"run": run, "note": note, "command": command, "total_steps": total,
              "warmup": span_steps(o["warmup_epochs"], o["warmup_steps"], o["warmup_fraction"], spe, total),
              "steps_per_epoch": spe, "out_dim": cfg["model"]["out_dim"], "centering": cfg["loss"]["centering"],
              "knn_online_random_init": baselines.get("knn_online_random_init"),
              "queries": min(e["online_queries"], test_images), "expect": expect}
    lines = [json.dumps({"header": header})]
    for r in steps:
        lines.append(json.dumps({k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in KEYS if k in r}))
    out.write_text("\n".join(lines) + "\n")
    return header


def results(paths: list[Path]) -> list[dict]:
    """The table's figures per fixture, with what the run showed (its online k-NN beside random init, the
    teacher's entropy as a share of ln K), for benchmarks/results/monitor.json."""
    import math

    out = []
    for path in paths:
        header, records, fired = replay_fixture(path)
        total, ln_k = header["total_steps"], math.log(header["out_dim"])
        expected = [step for step, w in fired if kind(w) == header["expect"]]
        entropy = [r["teacher_entropy"] / ln_k for r in records if "teacher_entropy" in r]
        out.append({"fixture": path.stem, "run": header["run"], "centering": header["centering"],
                    "expect": header["expect"], "planned_steps": total, "recorded_to": records[-1]["step"],
                    "warnings": [{"step": step, "kind": kind(w), "share": round(step / total, 2)} for step, w in fired],
                    "expected_kind_share": round(expected[0] / total, 2) if expected else None,
                    "knn_online_random_init": header.get("knn_online_random_init"),
                    "knn_online": [[r["step"], r["knn_online"]] for r in records if "knn_online" in r],
                    "entropy_share_of_ln_k": [round(min(entropy), 2), round(max(entropy), 2)] if entropy else None,
                    "command": header.get("command", "")})
    return out


def table(rows: list[dict]) -> str:
    """Per fixture (a row of :func:`results`): the first warning and the first of the expected kind, at which step
    and share of the planned run; healthy runs: none over the steps recorded."""
    lines = ["| fixture | run | centering | expected | first warning | expected kind at | planned steps "
             "| recorded to |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: |"]
    for r in rows:
        total, fired = r["planned_steps"], r["warnings"]
        first = f"{fired[0]['kind']}, {at(fired[0]['step'], total)}" if fired else "none"
        expected = [w["step"] for w in fired if w["kind"] == r["expect"]]
        exp = at(expected[0], total) if expected else "-"
        lines.append(f"| {r['fixture']} | {r['run']} | {r['centering']} | {r['expect'] or 'none (healthy)'} "
                     f"| {first} | {exp} | {total} | {r['recorded_to']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action")
    t = sub.add_parser("trim", help="a run directory's metrics.jsonl as a fixture")
    t.add_argument("run_dir", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--expect", default=None, help="the first warning's kind, e.g. 'uniform collapse' (none: healthy)")
    t.add_argument("--run", required=True, help="the run's name (docs/learning.md)")
    t.add_argument("--note", default="")
    t.add_argument("--command", default="", help="the dinolite command that recorded it")
    parser.add_argument("--json", default="benchmarks/results/monitor.json",
                        help="where the table's figures go ('' for none)")
    args = parser.parse_args(argv)
    if args.action == "trim":
        print(json.dumps(trim(args.run_dir, args.out, args.expect, args.run, args.note, args.command), indent=1))
        return 0
    rows = results(sorted(FIXTURES.glob("*.jsonl")))
    print(table(rows))
    if args.json:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from provenance import provenance

        Path(args.json).write_text(json.dumps({"results": rows, "provenance": provenance(recipe=None)},
                                              indent=1))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
