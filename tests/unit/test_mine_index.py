"""The search API as mining uses it: identical faiss/torch results, IVF, memory-mapped corpora, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.mining.negatives import CorpusKeys, NegativeRules, mine_block
from embedforge.search.index import build_index, pair_scores, search


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    corpus = _unit(rng, 3000, 48)
    corpus[10] = corpus[20] = corpus[30]  # exact ties, listed in a scrambled order
    queries = _unit(rng, 300, 48)
    queries[0] = corpus[30]
    return queries, corpus


def test_faiss_and_torch_return_identical_results(data) -> None:
    queries, corpus = data
    fs, fi = search(queries, corpus, 40, backend="faiss")
    ts, ti = search(queries, corpus, 40, backend="torch", block=64)
    assert np.array_equal(fi, ti) and np.array_equal(fs, ts)
    assert fi[0, :3].tolist() == [10, 20, 30]  # ties broken by the lower corpus row
    assert np.all(np.diff(fs, axis=1) <= 0)
    # scores are the exact inner products of the returned rows
    assert np.allclose(fs, np.einsum("qd,qkd->qk", queries.astype(np.float64), corpus[fi].astype(np.float64)),
                       atol=1e-6)


def test_corpus_blocks_and_memory_mapped_corpus(data, tmp_path) -> None:
    queries, corpus = data
    np.save(tmp_path / "c.npy", corpus)
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    ref = search(queries, corpus, 25, backend="faiss")
    for backend in ("faiss", "torch"):
        index = build_index(mapped, backend, corpus_block=700, add_block=1000)
        got = index.search(queries, 25)
        assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0]), backend
    assert isinstance(mapped, np.memmap)


def test_k_larger_than_corpus_and_empty_queries(data) -> None:
    queries, corpus = data
    s, i = search(queries[:3], corpus[:5], 50)
    assert s.shape == i.shape == (3, 5) and sorted(i[0].tolist()) == [0, 1, 2, 3, 4]
    s, i = build_index(corpus).search(queries[:0], 5)
    assert s.shape == (0, 5)


def test_ivf_probing_every_list_equals_flat_search(data) -> None:
    queries, corpus = data
    flat = search(queries, corpus, 20, backend="faiss")
    index = build_index(corpus, "faiss", "ivf", nlist=16, nprobe=16)
    assert index.kind == "ivf"
    got = index.search(queries, 20)
    assert np.array_equal(got[1], flat[1]) and np.array_equal(got[0], flat[0])
    few = build_index(corpus, "faiss", "ivf", nlist=16, nprobe=2).search(queries, 20)
    valid = few[1] >= 0
    assert np.allclose(few[0][valid], pair_scores(queries, corpus, few[1])[valid])  # approximate set, exact scores


def test_clear_errors(data) -> None:
    queries, corpus = data
    with pytest.raises(ValueError, match="dimension mismatch"):
        search(queries[:, :10], corpus, 5)
    with pytest.raises(ValueError, match="dimension mismatch"):
        build_index(corpus, "torch").search(queries[:, :10], 5)
    with pytest.raises(ValueError, match="empty corpus"):
        search(queries, corpus[:0], 5)
    with pytest.raises(ValueError, match="2-d"):
        search(queries[0], corpus, 5)
    with pytest.raises(ValueError, match="ivf"):
        build_index(corpus, "torch", "ivf")


def _hwm_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_peak_memory_does_not_grow_with_the_number_of_queries(tmp_path, backend: str) -> None:
    """A memory-mapped corpus larger than one block; 3 vs 18 query blocks must peak at the same RSS."""
    rng = np.random.default_rng(1)
    n, d, block = 12_000, 64, 256
    path = tmp_path / "corpus.npy"
    np.save(path, _unit(rng, n, d))
    corpus = np.load(path, mmap_mode="r")
    index = build_index(corpus, backend, corpus_block=2048)
    keys = CorpusKeys(np.arange(n, dtype=np.int64) // 3, np.arange(n, dtype=np.int64))
    rules = NegativeRules(num_negatives=5, range_max=30, relative_margin=None)

    def run(blocks: int) -> float:
        _reset_hwm()
        start = _hwm_mib()
        kept = 0
        for b in range(blocks):
            q = _unit(np.random.default_rng(100 + b), block, d)
            pos = np.random.default_rng(b).integers(0, n, size=(block, 1))
            kept += int(mine_block(index, q, pos, np.arange(block) + b * block, keys, rules).n_kept.sum())
        assert kept > 0
        return _hwm_mib() - start

    run(2)  # warm up allocator pools
    few, many = run(3), run(18)
    assert many <= few + 16, f"peak RSS grew with the number of queries: {few:.1f} MiB for 3 blocks, {many:.1f} for 18"


@pytest.mark.gpu
def test_faiss_gpu_matches_cpu(data) -> None:
    queries, corpus = data
    index = build_index(corpus, "faiss")
    assert index.backend == "faiss-gpu"
    got = index.search(queries, 40)
    ref = search(queries, corpus, 40, backend="torch")
    assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])


def test_bf16_bound_covers_every_row_left_out() -> None:
    """No row outside the bf16 candidates scores above the bound (checked against every exact score)."""
    from embedforge.search.bf16_candidates import bf16_candidates, bf16_corpus

    rng = np.random.default_rng(3)
    corpus = _unit(rng, 2000, 384) * rng.uniform(0.5, 2.0, size=(2000, 1)).astype(np.float32)  # not unit rows
    queries = _unit(rng, 64, 384) * 3
    ids, bound = bf16_candidates(queries, bf16_corpus(corpus, block=700), 30, block=16, corpus_block=700)
    exact = queries.astype(np.float64) @ corpus.astype(np.float64).T
    left_out = np.ones_like(exact, dtype=bool)
    np.put_along_axis(left_out, ids, False, axis=1)
    assert (left_out.sum(axis=1) == 2000 - 30).all()
    assert np.all(np.where(left_out, exact, -np.inf).max(axis=1) <= bound)


def test_bf16_certified_search_equals_faiss_and_falls_back_on_near_ties(monkeypatch) -> None:
    """The bf16 torch path: certified queries and fp32 re-searched ones both equal faiss's exact results."""
    monkeypatch.setenv("EMBEDFORGE_BF16_SEARCH", "1")
    rng = np.random.default_rng(4)
    corpus = _unit(rng, 3000, 64)
    corpus[:200] = corpus[0] + rng.standard_normal((200, 64)).astype(np.float32) * 1e-3  # 200 near-duplicates
    queries = _unit(rng, 200, 64)
    queries[:20] = corpus[:20]  # these can only be certified by the fp32 search: their top-k are near-ties
    index = build_index(corpus, "torch", block=64, corpus_block=1000)
    assert index.bf16 is not None
    got = index.search(queries, 40)
    ref = search(queries, corpus, 40, backend="faiss")
    assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])
    assert index.fallback_rows >= 20 and index.certified_rows > 0


def test_bf16_search_can_be_switched_off(monkeypatch, data) -> None:
    monkeypatch.setenv("EMBEDFORGE_BF16_SEARCH", "0")
    queries, corpus = data
    index = build_index(corpus, "torch")
    assert index.bf16 is None
    got = index.search(queries, 40)
    ref = search(queries, corpus, 40, backend="faiss")
    assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])
    assert index.certified_rows == index.fallback_rows == 0


def test_pair_scores_depend_on_the_pair_alone(data, tmp_path) -> None:
    """The same (query, row) pair gets the same bits in any candidate list, block, order or thread count."""
    import torch

    queries, corpus = data
    rng = np.random.default_rng(1)
    ids = rng.integers(0, len(corpus), size=(len(queries), 30))
    ids[::5, -4:] = -1
    full = pair_scores(queries, corpus, ids)
    assert np.all(full[ids < 0] == -np.inf) and np.all(np.isfinite(full[ids >= 0]))
    ref = np.einsum("qd,qkd->qk", queries.astype(np.float64), corpus[np.maximum(ids, 0)].astype(np.float64))
    assert np.allclose(full[ids >= 0], ref[ids >= 0], atol=1e-6)
    perm = rng.permutation(30)
    assert np.array_equal(pair_scores(queries, corpus, ids[:, perm]), full[:, perm])  # other candidate order
    assert np.array_equal(pair_scores(queries[7:40], corpus, ids[7:40, :3]), full[7:40, :3])  # other block
    np.save(tmp_path / "c.npy", corpus)
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert np.array_equal(pair_scores(queries, mapped, ids), full)  # memory-mapped, one thread
    finally:
        torch.set_num_threads(threads)


def test_exact_order_ties_signed_zero_and_missing_rows() -> None:
    from embedforge.search.index import exact_order

    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [0.5, 0.0]], np.float32)
    query = np.array([[1.0, 0.0]], np.float32)  # scores: 1, 0, 1, -1, -0.0, 0.5
    scores, ids = exact_order(query, corpus, np.array([[4, 3, -1, 2, 1, 5, 0]]), 7)
    assert ids.tolist() == [[0, 2, 5, 1, 4, 3, -1]]  # ties (1.0; 0.0 and -0.0) by row; missing last
    assert scores[0, :6].tolist() == [1.0, 1.0, 0.5, 0.0, 0.0, -1.0] and scores[0, 6] == -np.inf
    scores, ids = exact_order(query, corpus, np.array([[4, 3, -1, 2, 1, 5, 0]]), 2)
    assert ids.tolist() == [[0, 2]] and scores.shape == (1, 2)
    repeated = pair_scores(query, corpus[:2], np.array([[0, 1, 0, 1, 0, -1]]))  # more entries than corpus rows
    assert repeated.tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0, -np.inf]]
    assert pair_scores(query, corpus, np.full((1, 3), -1)).tolist() == [[-np.inf] * 3]
