"""Test-set figures computed from per-model or per-exit logits: accuracy, probability-averaging
ensembles, and confidence-thresholded early exit."""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy(logits_or_probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in %; ties go to the lower class index (argmax)."""
    return (logits_or_probs.argmax(dim=1) == labels).double().mean().item() * 100


def ensemble_probs(logits: list[Tensor]) -> Tensor:
    """Average of the members' softmax probabilities (each member's logits ``[N, C]``)."""
    return torch.stack([z.float().softmax(dim=1) for z in logits]).mean(dim=0)


def early_exit(logits: list[Tensor], depths: list[int], threshold: float) -> tuple[Tensor, Tensor]:
    """Predictions and depths of early-exit inference.

    Each sample stops at the first exit (shallow to deep) whose top softmax probability is
    ``>= threshold``; a sample that never reaches it takes the final exit. ``depths[i]`` is the
    number of blocks computed to reach exit ``i``. Returns ``(predicted class [N], depth [N])``.
    """
    probs = torch.stack([z.float().softmax(dim=1) for z in logits])  # [E, N, C]
    conf, pred = probs.max(dim=2)  # [E, N]
    confident = conf >= threshold
    confident[-1] = True  # the final exit always answers
    first = confident.to(torch.uint8).argmax(dim=0)  # index of the first confident exit
    chosen = pred.gather(0, first[None]).squeeze(0)
    depth = torch.tensor(depths, dtype=torch.float64, device=first.device)[first]
    return chosen, depth


def early_exit_figures(logits: list[Tensor], labels: Tensor, depths: list[int], threshold: float) -> dict:
    pred, depth = early_exit(logits, depths, threshold)
    return {"threshold": threshold, "top1": (pred == labels).double().mean().item() * 100,
            "avg_depth": depth.mean().item(), "depth_fraction": depth.mean().item() / depths[-1]}
