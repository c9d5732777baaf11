"""k-NN search throughput (queries/s) and peak memory of dinolite's chunked weighted k-NN.

Simulated L2-normalised features (the search cost does not depend on what they encode):
on GPU, when CUDA is present, the ImageNet-sized problem (1.28M bank x 50k queries x 384 dims,
k up to 200); on CPU a smaller one that fits a laptop. Prints a table and writes JSON.

    python benchmarks/knn_throughput.py [--cpu-bank 100000 --cpu-queries 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from dinolite.eval.knn import knn_scores_multi


def problem(bank: int, queries: int, dim: int, classes: int, device: torch.device, dtype=torch.float32):
    g = torch.Generator(device).manual_seed(0)
    b = torch.nn.functional.normalize(torch.randn(bank, dim, generator=g, device=device), dim=1).to(dtype)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=g, device=device), dim=1).to(dtype)
    labels = torch.randint(0, classes, (bank,), generator=g, device=device)
    return b, q, labels


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(device: torch.device, bank: int, queries: int, dim: int, query_chunk: int, bank_chunk: int) -> dict:
    b, q, labels = problem(bank, queries, dim, 1000, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = rss_mib()
    t0 = time.perf_counter()
    knn_scores_multi(q, b, labels, 1000, (10, 20, 100, 200), 0.07, query_chunk, bank_chunk)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "bank": bank, "queries": queries, "dim": dim, "query_chunk": query_chunk, "bank_chunk": bank_chunk,
           "seconds": round(seconds, 3), "queries_per_s": round(queries / seconds, 1),
           "inputs_mib": round((b.numel() + q.numel()) * 4 / 2**20, 1)}
    if device.type == "cuda":
        row["peak_extra_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    else:
        row["peak_rss_mib"] = round(rss_mib(), 1)
        row["rss_growth_mib"] = round(rss_mib() - rss_before, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-bank", type=int, default=100_000)
    p.add_argument("--cpu-queries", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--query-chunk", type=int, default=1024)
    p.add_argument("--bank-chunk", type=int, default=65536)
    p.add_argument("--json", default="knn_throughput.json")
    args = p.parse_args()
    rows = []
    if torch.cuda.is_available():
        rows.append(run(torch.device("cuda"), 1_281_167, 50_000, args.dim, args.query_chunk, args.bank_chunk))
    rows.append(run(torch.device("cpu"), args.cpu_bank, args.cpu_queries, args.dim, args.query_chunk, args.bank_chunk))
    cols = ["device", "bank", "queries", "dim", "seconds", "queries_per_s", "inputs_mib", "peak_extra_mib", "peak_rss_mib"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
