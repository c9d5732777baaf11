"""Weighted k-NN against a brute-force reference written from the DINO paper's description."""

import numpy as np
import pytest
import torch

from dinolite.eval.knn import knn_accuracies, knn_accuracy, knn_scores, knn_scores_multi, rank_classes, topk_neighbours


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


# ---- exact agreement with brute force, ties included ------------------------------------------

def brute_force_predictions(queries, bank, labels, num_classes, k, t):
    """Rank all bank items by (similarity desc, index asc), vote with the first k, rank classes
    by (score desc, class index asc). Written from the tie rule stated in dinolite/eval/knn.py."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    neighbours, preds = [], []
    for row in q @ b.T:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        scores = [0.0] * num_classes
        for j in order:
            scores[labels[j]] += float(np.exp(row[j] / t))
        neighbours.append(order)
        preds.append(sorted(range(num_classes), key=lambda c: (-scores[c], c)))
    return np.array(neighbours), np.array(preds)


def tied_features(n, dim, g):
    """Vectors of -1/0/+1 with exactly 4 non-zeros: unit-normalised entries are exactly +-0.5, so
    every cosine similarity is an exact multiple of 0.25 and many are equal (ties everywhere)."""
    x = torch.zeros(n, dim)
    for row in x:
        cols = torch.randperm(dim, generator=g)[:4]
        row[cols] = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
    return x


@pytest.mark.parametrize("bank_chunk,query_chunk", [(100000, 1000), (37, 5), (1, 7)])
def test_predictions_equal_brute_force_with_ties_for_every_k(bank_chunk, query_chunk):
    g = torch.Generator().manual_seed(3)
    bank, queries = tied_features(260, 6, g), tied_features(30, 6, g)
    labels = torch.randint(0, 7, (260,), generator=g)
    ks = (10, 20, 100, 200)
    scores = knn_scores_multi(queries, bank, labels, 7, ks, 0.07, query_chunk=query_chunk, bank_chunk=bank_chunk)
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    for k in ks:
        ref_nb, ref_pred = brute_force_predictions(queries.numpy().astype(np.float64), bank.numpy().astype(np.float64),
                                                   labels.numpy(), 7, k, 0.07)
        # The test really has ties across the top-k edge: the k-th similarity recurs after position k.
        kth = sims.sort(dim=1, descending=True).values[:, k - 1:k]
        assert ((sims >= kth).sum(1) > k).sum() >= 20
        _, idx = topk_neighbours(torch.nn.functional.normalize(queries, dim=1),
                                 torch.nn.functional.normalize(bank, dim=1), k, bank_chunk)
        np.testing.assert_array_equal(idx.numpy(), ref_nb)
        np.testing.assert_array_equal(rank_classes(scores[k]).numpy(), ref_pred)


def test_chunk_size_does_not_change_scores_or_accuracy():
    g = torch.Generator().manual_seed(4)
    bank, queries = torch.randn(500, 16, generator=g), torch.randn(64, 16, generator=g)
    labels, q_labels = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (64,), generator=g)
    q, b = torch.nn.functional.normalize(queries, dim=1), torch.nn.functional.normalize(bank, dim=1)
    base = knn_scores_multi(queries, bank, labels, 10, query_chunk=1024, bank_chunk=65536)
    base_nb = topk_neighbours(q, b, 200)[1]
    for qc, bc in [(1, 3), (17, 128), (64, 499)]:
        other = knn_scores_multi(queries, bank, labels, 10, query_chunk=qc, bank_chunk=bc)
        for k in base:  # matmul blocking moves similarities by an ulp, never the neighbours
            torch.testing.assert_close(base[k], other[k], rtol=1e-5, atol=0)
            assert torch.equal(rank_classes(base[k]), rank_classes(other[k]))
        assert torch.equal(torch.cat([topk_neighbours(q[i:i + qc], b, 200, bc)[1] for i in range(0, 64, qc)]), base_nb)
    acc = knn_accuracies(queries, q_labels, bank, labels, 10)
    assert sorted(acc) == [10, 20, 100, 200]
    assert acc[20] == knn_accuracy(queries, q_labels, bank, labels, 10, k=20)


def test_k_larger_than_bank_uses_the_whole_bank():
    g = torch.Generator().manual_seed(5)
    bank, queries = torch.randn(12, 4, generator=g), torch.randn(3, 4, generator=g)
    labels = torch.arange(12) % 3
    scores = knn_scores_multi(queries, bank, labels, 3, (10, 200))
    q, b = torch.nn.functional.normalize(queries, dim=1), torch.nn.functional.normalize(bank, dim=1)
    full = torch.zeros(3, 3, dtype=torch.float64).index_add_(1, labels, ((q @ b.T).double() / 0.07).exp())
    torch.testing.assert_close(scores[200], full)
    assert not torch.equal(scores[10], scores[200])


# ---- the command: all k at once, features cached under the weights' hash -----------------------

def test_knn_command_caches_features_under_the_checkpoint_hash(tiny_run, tmp_path, capsys, monkeypatch):
    import dinolite.eval.features as features_mod
    from dinolite.cli import main

    cache = tmp_path / "cache"
    assert main(["knn", str(tiny_run), "--no-progress", "--cache-dir", str(cache), "--json", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr().out
    for k in (10, 20, 100, 200):
        assert f"\n{k:5d}  " in out
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("test-") and files[1].startswith("train-")
    from dinolite.engine import checkpoint as ckpt
    from dinolite.weights import file_sha256
    assert file_sha256(ckpt.list_checkpoints(tiny_run)[-1])[:16] in files[0]

    def no_extraction(*a, **k):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(features_mod, "extract_features", no_extraction)
    assert main(["knn", str(tiny_run), "--no-progress", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.split("queries")[1] == out.split("queries")[1]  # same table
    # The student has other weights file content only through its key: a separate cache entry.
    monkeypatch.undo()
    assert main(["knn", str(tiny_run), "--no-progress", "--cache-dir", str(cache), "--checkpoint-key", "student"]) == 0
    assert len(list(cache.iterdir())) == 4


def test_knn_command_data_override_goes_through_the_config(tiny_run, tmp_path, capsys):
    from dinolite.cli import main

    assert main(["knn", str(tiny_run), "--no-progress", "--no-cache", "--data", "subset=64", "test_subset=32"]) == 0
    assert "64 bank, 32 queries" in capsys.readouterr().out
    assert main(["knn", str(tiny_run), "--no-cache", "--data", "root=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Fashion-MNIST not found" in err
