"""Hybrid retrieval: reciprocal rank and z-score fusion on hand-built lists, and hybrid rows on real ADI data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.evaluation.harness import ModelRef, evaluate_models
from embedforge.evaluation.report import write_report
from embedforge.search.fusion import reciprocal_rank_fusion, zscore_fusion


def test_rrf_sums_reciprocal_ranks_over_the_lists_that_hold_a_document() -> None:
    dense = np.array([[3, 1, -1], [5, 6, 7]])
    lexical = np.array([[1, 7, 9], [-1, -1, -1]])
    scores, ids = reciprocal_rank_fusion([dense, lexical], k=5, rrf_k=60)
    assert ids.tolist() == [[1, 3, 7, 9, -1], [5, 6, 7, -1, -1]]
    assert scores[0, 0] == pytest.approx(1 / 62 + 1 / 61, rel=1e-6)  # rank 2 in one list, rank 1 in the other
    assert scores[0, 1] == pytest.approx(1 / 61, rel=1e-6) and scores[0, 4] == -np.inf
    # a document in both lists beats one ranked first in a single list; weights scale a list's votes
    _, ids = reciprocal_rank_fusion([dense, lexical], k=2, weights=[3.0, 1.0])
    assert ids[0].tolist() == [1, 3]
    _, ids = reciprocal_rank_fusion([np.array([[2, 1]]), np.array([[1, 2]])], k=2)
    assert ids.tolist() == [[1, 2]]  # equal fused scores: the lower id first, whatever the list order


def test_zscore_fusion_standardizes_each_list_and_penalizes_missing_documents() -> None:
    ids_a, s_a = np.array([[3, 1, -1]]), np.array([[0.9, 0.8, 0.0]], np.float32)
    ids_b, s_b = np.array([[1, 7, 9]]), np.array([[12.0, 8.0, 1.0]], np.float32)
    scores, ids = zscore_fusion([(s_a, ids_a), (s_b, ids_b)], k=4)
    z_b = (np.array([12.0, 8.0, 1.0]) - 7.0) / np.std([12.0, 8.0, 1.0])
    assert ids.tolist() == [[1, 3, 7, 9]]
    assert scores[0].tolist() == pytest.approx([-1 + z_b[0], 1 + z_b[2], -1 + z_b[1], -1 + z_b[2]], rel=1e-5)
    # scale-free: multiplying one retriever's scores changes nothing
    again = zscore_fusion([(s_a, ids_a), (s_b * 1000, ids_b)], k=4)
    assert np.array_equal(again[1], ids) and np.allclose(again[0], scores, atol=1e-5)


def test_fusion_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="number of queries"):
        reciprocal_rank_fusion([np.zeros((2, 3), int), np.zeros((3, 3), int)], k=3)
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([np.zeros((2, 3), int)], k=3, weights=[1.0, 2.0])


def test_hybrid_rows_on_adi_are_tested_against_the_reference(adi_dir: Path, encoder, tmp_path: Path) -> None:
    ds = load_beir(adi_dir)
    opts = EvaluateConfig(cache=False, dims=[384, 96], quantizations=["none"], latency=False, n_resamples=500,
                       hybrid=["rrf", "zscore"], bm25_weights=[1.0, 1e-3, 1e3])
    result = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2"), ModelRef("bm25", "bm25")], opts)
    rows = {(r["model"], r["dim"]): r for r in result.rows}
    fused = {f"minilm+bm25-{f}{w}" for f in ("rrf", "zscore") for w in ("", "-w0.001", "-w1000")}
    assert set(rows) == {("minilm", 384), ("minilm", 96), ("bm25", None)} | {(m, d) for m in fused for d in (384, 96)}
    # BM25's weight moves the fused ranking from the dense model's own (weight → 0) towards BM25's (→ ∞)
    for d in (384, 96):
        assert rows[("minilm+bm25-zscore-w0.001", d)]["ndcg_at_10"] == pytest.approx(rows[("minilm", d)]["ndcg_at_10"])
        assert rows[("minilm+bm25-zscore-w1000", d)]["ndcg_at_10"] == pytest.approx(rows[("bm25", None)]["ndcg_at_10"],
                                                                                   abs=0.01)
    assert rows[("minilm+bm25-zscore-w1000", 384)]["bm25_weight"] == 1000.0
    hybrid = rows[("minilm+bm25-rrf", 384)]
    assert hybrid["fusion"] == "rrf" and hybrid["ref_model"] == "minilm" and 0 <= hybrid["p_value_ttest"] <= 1
    # fusing two different retrievers changes the ranking (and so the metric) of both
    assert hybrid["ndcg_at_10"] != rows[("minilm", 384)]["ndcg_at_10"]
    assert hybrid["ndcg_at_10"] != rows[("bm25", None)]["ndcg_at_10"]
    per_query = [p for p in result.per_query if p["model"] == "minilm+bm25-zscore" and p["dim"] == 96]
    assert len(per_query) == len(ds.query_ids)
    assert hybrid["index_bytes"] > rows[("minilm", 384)]["index_bytes"]  # the dense index and BM25's
    paths = write_report(result, tmp_path)  # the report validates every row
    assert "minilm+bm25-rrf" in paths["report"].read_text()
    with pytest.raises(ValueError, match="'rrf' or 'zscore'"):
        EvaluateConfig(hybrid=["max"], latency=False)


def test_embedding_cache_spares_the_second_encode(adi_dir: Path, encoder, tmp_path: Path, monkeypatch) -> None:
    from embedforge.encoding import cache as cache_module

    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache_module, "_SHARED", {})
    ds = load_beir(adi_dir)
    opts = EvaluateConfig(dims=[384], quantizations=["none"], latency=False, cache=True)
    first = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2")], opts).rows[0]
    second = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2")], opts).rows[0]
    assert first["corpus_cache_hits"] == 0 and first["corpus_docs_per_s"] > 0
    assert second["corpus_cache_hits"] == len(ds.corpus_ids) and second["corpus_docs_per_s"] is None
    assert second["ndcg_at_10"] == first["ndcg_at_10"]
    assert any((tmp_path / "cache").rglob("*")), "vectors were written to $EMBEDFORGE_CACHE"
