"""How long ``dinolite --help`` (and one subcommand's --help) take, in fresh processes: the time a user waits
before the first line. Prints the figures and writes JSON.

    python benchmarks/cli_startup.py [--repeat 5] [--json benchmarks/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default="benchmarks/results/cli_startup.json")
    args = p.parse_args(argv)
    base = [sys.executable, "-m", "dinolite.cli"]
    results = {}
    for name, extra in (("dinolite --help", ["--help"]), ("dinolite pretrain --help", ["pretrain", "--help"]),
                        ("python -c pass (interpreter alone)", None)):
        cmd = base + extra if extra is not None else [sys.executable, "-c", "pass"]
        runs = timed(cmd, args.repeat)
        results[name] = {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "runs": len(runs)}
        print(f"{name:40s} median {results[name]['median_s']:.3f} s  (min {results[name]['min_s']:.3f} s)")
    load = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": results, "load_average": load, "cpus": os.cpu_count()}, indent=1))
    print(f"written to {args.json} (load average {load[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
