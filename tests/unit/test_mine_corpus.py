"""Mining inputs: text normalization, known positives, resumable memory-mapped corpus vectors, config checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from embedforge.configs.mine import MineConfig
from embedforge.data.schemas import CHUNKS
from embedforge.data.shards import shard_name, write_parquet
from embedforge.mining.corpus import (
    KnownPositives,
    corpus_vectors,
    load_mining_corpus,
    normalize_text,
    stable_keys,
)
from embedforge.mining.report import MiningStats, plot_stats


def _chunks(tmp_path, texts: list[str], docs: list[str] | None = None):
    docs = docs or [f"d{i}" for i in range(len(texts))]
    rows = [{"chunk_id": f"c{i}", "doc_id": d, "doc_version": d, "idx": 0, "title": "", "text": t,
             "start_char": 0, "end_char": len(t), "n_tokens": 5} for i, (t, d) in enumerate(zip(texts, docs, strict=True))]
    write_parquet(tmp_path / "chunk" / "shards" / shard_name(0), pa.Table.from_pylist(rows, schema=CHUNKS))
    return load_mining_corpus(tmp_path / "chunk")


def test_normalize_text_folds_case_punctuation_and_space() -> None:
    assert normalize_text("  The  POSITIVE,\tpassage!! ") == normalize_text("the positive passage") != ""
    assert normalize_text("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"
    assert normalize_text("a b") != normalize_text("a c")


def test_known_positives_lookup_unions_text_and_id_keys() -> None:
    known = KnownPositives.from_pairs(np.array([7, 7, 9, 7, 11]), np.array([0, 3, 5, 3, -1]))
    assert known.lookup(np.array([7, 9, 8])).tolist() == [[0, 3], [5, -1], [-1, -1]]
    union = known.lookup(np.array([7, 9]), np.array([9, 9]))
    assert [sorted(r[r >= 0].tolist()) for r in union] == [[0, 3, 5], [5]]


def test_corpus_loading_and_clear_errors(tmp_path) -> None:
    corpus = _chunks(tmp_path, ["alpha text", "beta text", "Alpha  TEXT!"], ["x", "y", "x"])
    assert len(corpus) == 3 and corpus.rows(["c2", "nope"]).tolist() == [2, -1]
    assert corpus.keys.text_hashes[0] == corpus.keys.text_hashes[2] != corpus.keys.text_hashes[1]
    assert corpus.keys.doc_codes[0] == corpus.keys.doc_codes[2] != corpus.keys.doc_codes[1]
    with pytest.raises(ValueError, match="no chunk shards"):
        load_mining_corpus(tmp_path / "missing")
    write_parquet(tmp_path / "empty" / "shards" / shard_name(0), pa.Table.from_pylist([], schema=CHUNKS))
    with pytest.raises(ValueError, match="no rows"):
        load_mining_corpus(tmp_path / "empty")


def test_corpus_vectors_resume_after_a_crash_and_reuse(tmp_path, encoder) -> None:
    texts = [f"passage number {i} about topic {i % 3}" for i in range(10)]
    corpus = _chunks(tmp_path, texts)
    path = tmp_path / "vectors.npy"
    calls: list[int] = []

    def crashing(batch: list[str]) -> np.ndarray:
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(len(batch))
        return encoder.encode(batch)

    with pytest.raises(KeyboardInterrupt):
        corpus_vectors(path, corpus, crashing, encoder.model_id, encoder.dim, block=3)
    assert json.loads(path.with_suffix(".json").read_text())["rows_done"] == 6
    resumed: list[int] = []
    vectors = corpus_vectors(path, corpus, lambda b: resumed.append(len(b)) or encoder.encode(b),
                             encoder.model_id, encoder.dim, block=3)
    assert resumed == [3, 1]  # only the blocks the crash left
    assert isinstance(vectors, np.memmap) and vectors.shape == (10, encoder.dim)
    assert np.allclose(vectors, encoder.encode(corpus.take_texts(np.arange(10))), atol=1e-5)
    again: list[int] = []
    corpus_vectors(path, corpus, lambda b: again.append(1) or encoder.encode(b), encoder.model_id, encoder.dim)
    assert again == []  # finished vectors are reused
    corpus_vectors(path, corpus, lambda b: again.append(1) or encoder.encode(b), "another-model", encoder.dim)
    assert again == [1]  # a different model re-encodes


def test_stats_roundtrip_and_plot(tmp_path) -> None:
    stats = MiningStats()
    stats.positives.add(np.array([0.8, 0.7, 0.9]))
    stats.negatives.add(np.array([0.5, np.nan, 0.4]))
    stats.add_counts({"candidates": 10, "relative_margin": 4, "kept": 2, "not_sampled": 4})
    stats.save(tmp_path / "s.json")
    merged = MiningStats.load(tmp_path / "s.json")
    merged.merge(stats)
    report = merged.report()
    assert report["positive_scores"]["count"] == 6 and report["negative_scores"]["count"] == 4
    assert report["positive_scores"]["mean"] == pytest.approx(0.8)
    assert report["removed_share"]["relative_margin"] == 0.4
    plot_stats(merged, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ValueError, match="range_min"):
        MineConfig(range_min=10, range_max=10)
    with pytest.raises(ValueError, match="num_negatives"):
        MineConfig(num_negatives=20, range_max=10)
    with pytest.raises(ValueError, match="min_score"):
        MineConfig(min_score=0.5, max_score=0.4)
    with pytest.raises(ValueError, match="cross_encoder"):
        MineConfig(cross_encoder=" ")
    with pytest.raises(ValueError, match="extra"):
        MineConfig(margin=0.1)
    assert stable_keys(["a"]).dtype == np.int64
