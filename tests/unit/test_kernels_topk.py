"""Fused similarity + streaming top-k vs its torch reference (Triton interpreter on CPU; compiled on CUDA).

Tolerance on scores, by input dtype: fp32 1e-5 (IEEE dot, fp32 accumulation; only the summation order
differs), fp16 1e-3 and bf16 1e-2 on GPU (tensor cores accumulate in fp32 but in another order). On the
interpreter both sides multiply the same upcast values, so the same bounds hold with margin. Ids must match
exactly except where two reference scores are within that tolerance (a near-tie); with integer-valued data the
arithmetic is exact and ids must match exactly, ties going to the lower corpus id.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedforge.kernels as kernels
from embedforge.kernels import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDFORGE_KERNELS", "interpret")


def _vectors(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Unit rows, like the embeddings this searches (scores in [-1, 1])."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


def assert_topk_close(queries: torch.Tensor, corpus: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor,
                      k: int, tol: float) -> None:
    """Same width, sorted, scores within ``tol`` of the reference, and every id truly scores that well."""
    want_s, want_i = reference.similarity_topk(queries, corpus, k)
    assert scores.shape == ids.shape == want_s.shape
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    torch.testing.assert_close(scores, want_s, atol=tol, rtol=0)
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "scores must be sorted descending"
    true = (queries.float() @ corpus.float().T).gather(1, ids)
    torch.testing.assert_close(true, want_s, atol=tol, rtol=0)
    assert all(len(set(row)) == len(row) for row in ids.tolist()), "duplicate ids in a row"
    gaps = torch.cat([want_s[:, :-1] - want_s[:, 1:], torch.full((want_s.shape[0], 1), np.inf)], dim=1)
    clear = (gaps > tol) & torch.cat([torch.full((want_s.shape[0], 1), np.inf), gaps[:, :-1]], dim=1).gt(tol)
    assert torch.equal(ids[clear], want_i[clear]), "ids differ where scores are not near-ties"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n_q", "n_c", "d", "k"), [(1, 1, 1, 1), (7, 385, 385, 10), (5, 40, 16, 100)])
def test_topk_matches_reference(interpret: None, n_q: int, n_c: int, d: int, k: int, dtype: torch.dtype) -> None:
    queries, corpus = _vectors(n_q, d, dtype, 0), _vectors(n_c, d, dtype, 1)
    scores, ids = kernels.similarity_topk(queries, corpus, k)
    assert scores.shape == (n_q, min(k, n_c))  # k larger than the corpus → the whole corpus, ranked
    assert_topk_close(queries, corpus, scores, ids, k, TOL[dtype])


def test_topk_1023_queries_by_384_dims(interpret: None) -> None:
    """The large irregular case, once (fp32, interpreter time): 1023 queries × 384 dims, 300-row corpus, k=10."""
    queries, corpus = _vectors(1023, 384, torch.float32, 2), _vectors(300, 384, torch.float32, 3)
    scores, ids = kernels.similarity_topk(queries, corpus, 10)
    assert_topk_close(queries, corpus, scores, ids, 10, TOL[torch.float32])


def test_topk_k_2048_and_beyond(interpret: None) -> None:
    """k = 2048 (FAISS-GPU's ceiling) and k = 2500 (beyond it) over a 2600-row corpus."""
    queries, corpus = _vectors(3, 8, torch.float32, 4), _vectors(2600, 8, torch.float32, 5)
    for k in (2048, 2500):
        scores, ids = kernels.similarity_topk(queries, corpus, k)
        assert scores.shape == (3, k)
        assert_topk_close(queries, corpus, scores, ids, k, TOL[torch.float32])


def test_ties_go_to_the_lower_id_like_faiss(interpret: None) -> None:
    """Integer data with duplicated corpus rows and all-zero (padding-only) queries: exact, deterministic ids."""
    from embedforge.search.index import search

    gen = torch.Generator().manual_seed(6)
    base = torch.randint(-2, 3, (60, 24), generator=gen).float()
    corpus = torch.cat([base, base, base[:17]])  # every score appears at least twice
    queries = torch.randint(-2, 3, (9, 24), generator=gen).float()
    queries[4] = 0.0  # a padding-only row: all scores tie at 0
    scores, ids = kernels.similarity_topk(queries, corpus, 50)
    full = queries @ corpus.T
    order = torch.sort(full, dim=1, descending=True, stable=True).indices[:, :50]  # stable: lower id first
    assert torch.equal(ids, order)
    assert torch.equal(scores, full.gather(1, order))
    assert torch.equal(ids[4], torch.arange(50))
    faiss_scores, faiss_ids = search(queries.numpy(), corpus.numpy(), 50, backend="faiss")
    assert np.array_equal(ids.numpy(), faiss_ids)


def test_every_partial_result_is_written(interpret: None) -> None:
    from embedforge.kernels.topk import launch_similarity_topk

    queries, corpus = _vectors(37, 20, torch.float16, 7), _vectors(300, 20, torch.float16, 8)
    sentinel = 0x5EED
    out = torch.full((3, 37, 16), sentinel, dtype=torch.int64)
    launch_similarity_topk(queries, corpus, out, "interpret")
    assert not (out == sentinel).any()
    from embedforge.kernels.topk import merge_split_keys

    scores, ids = merge_split_keys(out, 10)
    assert_topk_close(queries, corpus, scores, ids, 10, TOL[torch.float16])


def test_bad_inputs_are_refused(interpret: None) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        kernels.similarity_topk(torch.zeros(2, 4), torch.zeros(0, 4), 3)
    with pytest.raises(ValueError, match=r"\(q, d\)"):
        kernels.similarity_topk(torch.zeros(2, 4), torch.zeros(5, 3), 3)
    with pytest.raises(ValueError, match="cast"):
        kernels.similarity_topk(torch.zeros(2, 4), torch.zeros(5, 4, dtype=torch.float16), 3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 100, 256, 2048])  # 2048: past FUSED_K_MAX
def test_topk_compiled_on_cuda(dtype: torch.dtype, k: int) -> None:
    queries, corpus = _vectors(1000, 384, dtype, 0).cuda(), _vectors(20000, 384, dtype, 1).cuda()
    scores, ids = kernels.similarity_topk(queries, corpus, k, backend="triton")
    assert_topk_close(queries, corpus, scores, ids, k, TOL[dtype])
