"""Weighted k-NN classification (DINO paper, after Wu et al. 2018), chunked to bound memory."""

from __future__ import annotations

import torch
from torch import Tensor


def topk_neighbours(queries: Tensor, bank: Tensor, k: int, bank_chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine similarities and bank indices for each query, streaming over the bank.

    Only a ``[queries, bank_chunk]`` block of similarities exists at a time; a running top-k is
    merged with each block's top-k.
    """
    k = min(k, bank.shape[0])
    best_s = queries.new_full((queries.shape[0], 0), float("-inf"))
    best_i = torch.empty((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for start in range(0, bank.shape[0], bank_chunk):
        sims = queries @ bank[start:start + bank_chunk].T
        s, i = sims.topk(min(k, sims.shape[1]), dim=1)
        best_s, pos = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, pos)
    return best_s, best_i


def knn_scores(queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, query_chunk: int = 1024, bank_chunk: int = 65536) -> Tensor:
    """Class scores ``[Q, num_classes]``: sum over the k nearest of exp(cos / T) for their class.

    Features are L2-normalised here, so the dot product is the cosine similarity. Memory stays at
    ``query_chunk x bank_chunk`` similarities whatever the bank size.
    """
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    out = []
    for start in range(0, queries.shape[0], query_chunk):
        sims, idx = topk_neighbours(queries[start:start + query_chunk], bank, k, bank_chunk)
        weights = (sims / temperature).exp()
        scores = torch.zeros(sims.shape[0], num_classes, device=queries.device)
        scores.scatter_add_(1, bank_labels[idx], weights)
        out.append(scores)
    return torch.cat(out)


def knn_accuracy(queries: Tensor, query_labels: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of the weighted k-NN vote."""
    scores = knn_scores(queries, bank, bank_labels.to(queries.device), num_classes, k, temperature)
    ranked = scores.argsort(dim=1, descending=True)
    labels = query_labels.to(ranked.device)[:, None]
    top1 = (ranked[:, :1] == labels).any(1).float().mean().item() * 100
    top5 = (ranked[:, :min(5, num_classes)] == labels).any(1).float().mean().item() * 100
    return {"top1": top1, "top5": top5}
