"""The held-out split as a dataset, and resumable (cached) harness results."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.data.schemas import CHUNKS, QUERIES
from embedforge.data.shards import ShardWriter, shard_name
from embedforge.evaluation.harness import ModelRef, evaluate_models
from embedforge.evaluation.heldout import heldout_dataset


def _chunk(cid: str, title: str, text: str) -> dict:
    return {"chunk_id": cid, "doc_id": cid[:1], "doc_version": "v", "idx": 0, "title": title, "text": text,
            "start_char": 0, "end_char": len(text), "n_tokens": 3}


def _query(qid: str, cid: str, text: str, split: str) -> dict:
    return {"query_id": qid, "chunk_id": cid, "doc_id": cid[:1], "query": text, "kind": "title",
            "generator": "test", "prompt_hash": "", "seed": 0, "split": split}


def test_heldout_uses_val_queries_against_chunks(tmp_path: Path) -> None:
    ShardWriter(tmp_path / "chunk").write(shard_name(0), pa.Table.from_pylist(
        [_chunk("a-0", "Solar", "panels on roofs"), _chunk("b-0", "", "bread recipe")], schema=CHUNKS))
    ShardWriter(tmp_path / "gen").write(shard_name(0), pa.Table.from_pylist([
        _query("q1", "a-0", "roof solar power", "val"), _query("q2", "b-0", "how to bake", "train"),
        _query("q3", "zz-0", "orphan", "val"), _query("q4", "b-0", "  ", "val"),
        _query("q1", "b-0", "duplicate id", "val"), _query("q5", "b-0", "baking bread", "val")], schema=QUERIES))
    ds, counts = heldout_dataset(tmp_path / "chunk", tmp_path / "gen")
    assert ds.query_ids == ["q1", "q5"] and ds.qrels == {"q1": {"a-0": 1}, "q5": {"b-0": 1}}
    assert ds.corpus_ids == ["a-0", "b-0"] and ds.corpus_texts == ["Solar panels on roofs", "bread recipe"]
    assert counts == {"heldout_queries": 2, "heldout_unknown_chunk": 1, "heldout_empty_query": 1,
                      "heldout_duplicate_id": 1}
    result = evaluate_models([ds], [ModelRef("bm25", "bm25")], EvaluateConfig(cache=False, latency=False))
    assert result.rows[0]["ndcg_at_10"] == 1.0


def test_cached_results_are_reused(adi_dir: Path, tmp_path: Path) -> None:
    ds = load_beir(adi_dir)
    opts = EvaluateConfig(cache=False, latency=False)
    first = evaluate_models([ds], [ModelRef("bm25", "bm25")], opts, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.json")
    data = json.loads(cached.read_text())
    data["rows"][0]["ndcg_at_10"] = 0.123  # a marker: the second run must read the cache, not recompute
    cached.write_text(json.dumps(data))
    second = evaluate_models([ds], [ModelRef("bm25", "bm25")], opts, cache_dir=tmp_path)
    assert first.rows[0]["ndcg_at_10"] != 0.123 and second.rows[0]["ndcg_at_10"] == 0.123
