"""Matryoshka truncation, quantized indexes, BM25 rows and the harness on real ADI data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.encoding.encoder import truncate_normalize
from embedforge.evaluation.harness import ModelRef, evaluate_models, parse_model_ref
from embedforge.search import faiss_indexes
from embedforge.search.quantize import QuantizedSearcher, pack_binary


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_truncation_keeps_prefix_and_renormalizes(encoder) -> None:
    full = encoder.encode(["solar panels on roofs", "a recipe for bread"], normalize=False)
    for dim in (384, 192, 96, 48):
        cut = truncate_normalize(full, dim)
        assert cut.shape == (2, dim)
        assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
        expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        assert np.allclose(cut, expected, atol=1e-6)
        assert np.allclose(encoder.encode(["solar panels on roofs"], dim=dim), cut[:1], atol=1e-5)
    with pytest.raises(ValueError, match="larger than"):
        truncate_normalize(full, 512)


def test_quantized_searchers_find_near_duplicates_and_shrink_the_index() -> None:
    rng = np.random.default_rng(0)
    corpus = _unit(rng, 2000, 64)
    queries = corpus[:50] + 0.05 * rng.normal(size=(50, 64)).astype(np.float32)
    sizes = {}
    for quant in ("none", "int8", "binary", "binary_rescore"):
        s = QuantizedSearcher(corpus, quant)
        scores, ids = s.search(queries, 10)
        assert ids.shape == (50, 10) and ids.dtype == np.int64
        assert (ids[:, 0] == np.arange(50)).mean() >= 0.9, quant
        assert np.all(np.diff(scores, axis=1) <= 1e-6), f"{quant}: scores not descending"
        sizes[quant] = s.bytes
    assert sizes["int8"] < sizes["none"] / 3
    assert sizes["binary"] < sizes["int8"] / 6
    flat = QuantizedSearcher(corpus, "none")
    assert np.array_equal(flat.search(queries, 10)[1], flat.search(queries, 10, prebuilt=True)[1])
    index, _ = faiss_indexes.build("hnsw", corpus, ef_construction=200)
    _, approx = index.search(queries, 10)
    assert (approx[:, 0] == np.arange(50)).mean() >= 0.9


def test_pack_binary_packs_sign_bits() -> None:
    v = np.array([[0.5, -1, 0.1, 0, 2, -3, 1, 1, -0.2]], dtype=np.float32)
    assert pack_binary(v).tolist() == [[0b10101011, 0]]
    with pytest.raises(ValueError, match="unknown quantization"):
        QuantizedSearcher(v, "int4")


def test_model_ref_parsing() -> None:
    assert parse_model_ref("bm25").is_bm25
    assert parse_model_ref("tuned=runs/x/model") == ModelRef("tuned", "runs/x/model")
    assert parse_model_ref("runs/x/model/") == ModelRef("model", "runs/x/model")
    assert parse_model_ref("all-MiniLM-L6-v2") == ModelRef("all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


def test_bm25_row_on_adi(adi_dir: Path) -> None:
    ds = load_beir(adi_dir)
    cfg = EvaluateConfig(cache=False, search_latency_queries=5, bm25_stemmer=None)
    result = evaluate_models([ds], [ModelRef("bm25", "bm25")], cfg)
    (row,) = result.rows
    assert row["dim"] is None and row["quantization"] == "none" and row["model"] == "bm25"
    assert abs(row["ndcg_at_10"] - 0.4214) < 0.003  # measured with k1 0.9, b 0.4, no stemming (see bm25.py)
    assert row["stemmer"] is None
    assert row["index_bytes"] > 0 and row["search_ms_p50"] > 0
    assert len(result.per_query) == len(ds.query_ids) == 35


def test_dense_rows_per_dim_and_quantization_with_significance(adi_dir: Path, encoder) -> None:
    ds = load_beir(adi_dir)
    opts = EvaluateConfig(cache=False, dims=[384, 48], quantizations=["none", "binary"], latency=False, n_resamples=500)
    result = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2"), ModelRef("bm25", "bm25")], opts)
    keys = {(r["model"], r["dim"], r["quantization"]) for r in result.rows}
    assert keys == {("minilm", 384, "none"), ("minilm", 384, "binary"), ("minilm", 48, "none"),
                    ("minilm", 48, "binary"), ("bm25", None, "none")}
    by = {(r["dim"], r["quantization"]): r for r in result.rows if r["model"] == "minilm"}
    assert by[(384, "none")]["ndcg_at_10"] > by[(48, "none")]["ndcg_at_10"]
    assert by[(384, "binary")]["index_bytes"] < by[(384, "none")]["index_bytes"] / 20
    bm25_row = next(r for r in result.rows if r["model"] == "bm25")
    assert bm25_row["ref_model"] == "minilm" and 0 <= bm25_row["p_value_ttest"] <= 1
    assert len(result.significance) == 1 and result.significance[0]["reference_dim"] == 384
    with pytest.raises(ValueError, match="exceed"):
        evaluate_models([ds], [ModelRef("m", "all-MiniLM-L6-v2")], EvaluateConfig(cache=False, dims=[512], latency=False))
