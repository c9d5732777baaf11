"""Does this CPU keep its speed under sustained load? A fixed float32 matrix product (the quickstart's shapes: 64
images x 17 tokens by width 128 -> 512, the MLP's first layer) run back to back for ``--seconds``, its GFLOP/s
reported per ``--window`` seconds. A budget times its step in the first seconds; a CPU that slows down after
them (frequency boost spent, a neighbour on the host) makes every later step slower than planned.

    python benchmarks/sustained.py --seconds 120 --window 10

Run it with nothing else on the machine. Prints the windows and writes JSON with provenance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import provenance, write_result  # noqa: E402


def windows(seconds: float, window: float, threads: int, m: int = 64 * 17, k: int = 128, n: int = 512) -> list[float]:
    """GFLOP/s of ``[m, k] @ [k, n]`` float32 products in consecutive windows of ``window`` seconds."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    flop = 2 * m * k * n
    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0, count = time.perf_counter(), 0
        while time.perf_counter() - t0 < window:
            for _ in range(50):
                torch.mm(a, b)
            count += 50
        out.append(round(count * flop / (time.perf_counter() - t0) / 1e9, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/sustained.json"))
    args = p.parse_args(argv)
    gflops = windows(args.seconds, args.window, args.threads)
    for i, g in enumerate(gflops):
        print(f"{i * args.window:6.0f}-{(i + 1) * args.window:.0f} s: {g} GFLOP/s", flush=True)
    first, rest = gflops[0], gflops[1:] or gflops
    print(f"first window {first} GFLOP/s, later windows {min(rest)}-{max(rest)} "
          f"(mean {sum(rest) / len(rest):.1f}): {100 * (sum(rest) / len(rest) / first - 1):+.1f} %")
    write_result(args.json, {"seconds": args.seconds, "window_s": args.window, "threads": args.threads,
                             "gflops": gflops, "provenance": provenance(recipe=None)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
