"""Training curves of a run directory's metrics.jsonl as one PNG: loss, lr, teacher entropy, online k-NN
(against the random-init figure of baselines.json), and the final k-NN beside its baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UserError


def read_metrics(path: Path) -> list[dict]:
    """The JSON lines of ``metrics.jsonl``; a truncated last line (a run cut mid-write) is skipped."""
    if not path.is_file():
        raise UserError(f"{path} not found: pass a run directory written by 'dinolite pretrain'")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not any("loss" in r for r in rows):
        raise UserError(f"{path} holds no training metrics yet")
    return rows


def plot_run(run_dir: str | Path, out: str | Path | None = None, out_dim: int | None = None) -> Path:
    """Write the curves PNG (default ``RUN_DIR/curves.png``) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    knn = [r for r in rows if "knn_top1" in r]
    online = [r for r in train if "knn_online" in r]
    baselines_file = run_dir / "baselines.json"
    baselines = json.loads(baselines_file.read_text()).get("values", {}) if baselines_file.is_file() else {}
    x = [r.get("epoch", r["step"]) for r in train]
    xlabel = "epoch" if "epoch" in train[0] else "step"
    panels = [("loss", "loss (DINO + KoLeo, iBOT when on)"), ("lr", "learning rate"),
              ("teacher_entropy", "teacher entropy (nats)")]
    n = len(panels) + (1 if online else 0) + (1 if knn else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=False):  # the k-NN panels come after these
        ax.plot(x, [r.get(key, float("nan")) for r in train], lw=1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if out_dim:
        axes[0, 2].axhline(math.log(out_dim), ls="--", c="grey", lw=0.8, label=f"log {out_dim} (uniform)")
        axes[0, 2].legend(fontsize=7)
    if online:
        ax = axes[0, len(panels)]
        ax.plot([r.get("epoch", r["step"]) for r in online], [r["knn_online"] for r in online], "o-", lw=1.2,
                ms=3, label="teacher")
        if "knn_online_random_init" in baselines:
            ax.axhline(baselines["knn_online_random_init"], ls="--", c="grey", lw=0.8, label="random init")
        ax.set_title("online k-NN top-1 (%)", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if knn:
        ax = axes[0, -1]
        last = knn[-1]
        named = [("teacher", "knn_top1", "tab:blue"), ("random init", "knn_top1_random_init", "tab:grey"),
                 ("raw pixels", "knn_top1_pixels", "tab:olive")]
        shown = [(name, last[key], colour) for name, key, colour in named if key in last]
        bars = ax.bar([s[0] for s in shown], [s[1] for s in shown], color=[s[2] for s in shown])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"k-NN top-1 (%) at step {last['step']}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
