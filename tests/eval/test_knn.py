"""Weighted k-NN against a brute-force reference written from the DINO paper's description."""

import numpy as np
import pytest
import torch

from dinolite.eval.knn import knn_accuracy, knn_scores, topk_neighbours


def reference_scores(queries, bank, labels, num_classes, k, t):
    """For each query: cosine similarities to all bank items, the k largest, votes exp(s / T)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    out = np.zeros((len(q), num_classes))
    for i, row in enumerate(q @ b.T):
        nearest = np.argsort(-row)[:k]
        for j in nearest:
            out[i, labels[j]] += np.exp(row[j] / t)
    return out


@pytest.mark.parametrize("bank_chunk,query_chunk", [(1000, 1000), (7, 3), (1, 64)])
def test_scores_match_reference_for_any_chunking(bank_chunk, query_chunk):
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(97, 12, generator=g), torch.randn(23, 12, generator=g)
    labels = torch.randint(0, 5, (97,), generator=g)
    ours = knn_scores(queries, bank, labels, 5, k=10, temperature=0.07, query_chunk=query_chunk, bank_chunk=bank_chunk)
    ref = reference_scores(queries.numpy(), bank.numpy(), labels.numpy(), 5, 10, 0.07)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4)


def test_topk_streaming_equals_full_topk():
    g = torch.Generator().manual_seed(1)
    q, b = torch.randn(5, 4, generator=g), torch.randn(50, 4, generator=g)
    s, i = topk_neighbours(q, b, 8, bank_chunk=6)
    s_full, i_full = (q @ b.T).topk(8, dim=1)
    assert torch.allclose(s, s_full) and torch.equal(i, i_full)


def test_accuracy_on_separable_clusters_and_top5():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 16, generator=g) * 5
    labels = torch.arange(4).repeat_interleave(30)
    bank = centres[labels] + torch.randn(120, 16, generator=g) * 0.1
    q_labels = torch.arange(4).repeat(5)
    queries = centres[q_labels] + torch.randn(20, 16, generator=g) * 0.1
    acc = knn_accuracy(queries, q_labels, bank, labels, num_classes=4, k=20)
    assert acc == {"top1": 100.0, "top5": 100.0}
    wrong = knn_accuracy(queries, (q_labels + 1) % 4, bank, labels, num_classes=4, k=20)
    assert wrong["top1"] == 0.0
