"""Weighted k-NN classification (DINO paper, after Wu et al. 2018), chunked to bound memory.

Neighbours are ordered by cosine similarity, highest first; equal similarities are ordered by
bank index, lowest first (the tie rule). The result is therefore a function of the features
alone: the chunk sizes, the device and ``torch.topk``'s internal order cannot change it.

Memory: one block of ``query_chunk x bank_chunk`` similarities exists at a time (float32, plus a
1-byte mask; rows whose k-th value is tied are re-sorted, 12 bytes per element of those rows),
on top of the bank and queries themselves and the ``[Q, k_max]`` results. With the defaults
(1024 x 65536) a block is 256 MiB of similarities, about 0.9 GiB at worst with the tie pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

KS = (10, 20, 100, 200)


def _order(sims: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row of candidates by similarity descending, then bank index ascending."""
    by_index = idx.argsort(dim=1)
    sims, idx = sims.gather(1, by_index), idx.gather(1, by_index)
    by_sim = sims.sort(dim=1, descending=True, stable=True).indices
    return sims.gather(1, by_sim), idx.gather(1, by_sim)


def _block_topk(sims: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` of one block under the tie rule, in (similarity desc, index asc) order.

    ``topk`` picks an arbitrary subset of the values equal to the k-th one; where that subset is
    not all of them (a tie across the top-k edge), the row is redone with a stable sort, which
    keeps equal values in index order.
    """
    s, i = sims.topk(k, dim=1)
    kth = s[:, -1:]
    tied_edge = (sims == kth).sum(1) != (s == kth).sum(1)
    if bool(tied_edge.any()):
        rows = tied_edge.nonzero().squeeze(1)
        order = sims[rows].sort(dim=1, descending=True, stable=True)
        s[rows], i[rows] = order.values[:, :k], order.indices[:, :k]
    return _order(s, i)


def topk_neighbours(queries: Tensor, bank: Tensor, k: int, bank_chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Top-``k`` similarities (dot products) and bank indices for each query, streaming over the bank.

    Only a ``[queries, bank_chunk]`` block of similarities exists at a time; the running top-k
    (lower indices) is merged with each block's top-k under the tie rule.
    """
    k = min(k, bank.shape[0])
    best_s = queries.new_empty((queries.shape[0], 0))
    best_i = torch.empty((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for start in range(0, bank.shape[0], bank_chunk):
        block = queries @ bank[start:start + bank_chunk].T
        s, i = _block_topk(block, min(k, block.shape[1]))
        del block
        s, i = _order(torch.cat([best_s, s], 1), torch.cat([best_i, i + start], 1))
        best_s, best_i = s[:, :k], i[:, :k]
    return best_s, best_i


def _normalise(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def knn_scores_multi(queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, ks: Iterable[int] = KS,
                     temperature: float = 0.07, query_chunk: int = 1024, bank_chunk: int = 65536) -> dict[int, Tensor]:
    """Class scores ``{k: [Q, num_classes] float64}`` for several k from one neighbour search.

    Each neighbour votes exp(cos / T) for its class. The neighbours of the largest k are found
    once; the first k of them are the k nearest for every smaller k. Votes are accumulated in
    float64, in neighbour order, so classes with the same votes get exactly equal scores.
    """
    ks = sorted(set(int(k) for k in ks))
    queries, bank = _normalise(queries), _normalise(bank)
    bank_labels = bank_labels.to(queries.device)
    k_max = min(ks[-1], bank.shape[0])
    out: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in range(0, queries.shape[0], query_chunk):
        sims, idx = topk_neighbours(queries[start:start + query_chunk], bank, k_max, bank_chunk)
        weights = (sims.double() / temperature).exp()
        votes = bank_labels[idx]
        scores = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64, device=queries.device)
        done = 0
        for k in ks:
            upto = min(k, k_max)
            scores.scatter_add_(1, votes[:, done:upto], weights[:, done:upto])
            done = upto
            out[k].append(scores.clone())
    return {k: torch.cat(v) for k, v in out.items()}


def knn_scores(queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, query_chunk: int = 1024, bank_chunk: int = 65536) -> Tensor:
    """Class scores ``[Q, num_classes]``: sum over the k nearest of exp(cos / T) for their class."""
    return knn_scores_multi(queries, bank, bank_labels, num_classes, [k], temperature, query_chunk, bank_chunk)[k]


def rank_classes(scores: Tensor) -> Tensor:
    """Classes by score, highest first; equal scores keep the lower class index first."""
    return scores.sort(dim=1, descending=True, stable=True).indices


def topk_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of ``scores`` [N, C] against ``labels``."""
    ranked = rank_classes(scores)
    labels = labels.to(ranked.device)[:, None]
    top1 = (ranked[:, :1] == labels).any(1).double().mean().item() * 100
    top5 = (ranked[:, :min(5, scores.shape[1])] == labels).any(1).double().mean().item() * 100
    return {"top1": top1, "top5": top5}


def knn_accuracies(queries: Tensor, query_labels: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
                   ks: Iterable[int] = KS, temperature: float = 0.07, query_chunk: int = 1024,
                   bank_chunk: int = 65536) -> dict[int, dict[str, float]]:
    """``{k: {"top1", "top5"}}`` (in %) for every k, from one neighbour search."""
    scores = knn_scores_multi(queries, bank, bank_labels, num_classes, ks, temperature, query_chunk, bank_chunk)
    return {k: topk_accuracy(s, query_labels) for k, s in scores.items()}


def knn_accuracy(queries: Tensor, query_labels: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of the weighted k-NN vote for one k."""
    return knn_accuracies(queries, query_labels, bank, bank_labels, num_classes, [k], temperature)[k]
