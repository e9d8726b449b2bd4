"""Judged-query validation: real queries with human judgements join the validation set, their documents' chunks
join its corpus, and the evaluator ranks a document at its best chunk."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from embedforge.configs.train import TrainConfig
from embedforge.data.beir import BeirFormatError, load_judged
from embedforge.training.data import ValidationSet, add_judged
from embedforge.training.matryoshka_evaluator import MatryoshkaRetrievalEvaluator


def _val() -> tuple[ValidationSet, dict[str, str], dict[str, str]]:
    passages = {f"c{i}": f"passage {i}" for i in range(8)}
    chunk_docs = {"c0": "d0", "c1": "d0", "c2": "d1", "c3": "d2", "c4": "d3", "c5": "d4", "c6": "d5", "c7": "d5"}
    val = ValidationSet({"s": "synthetic query"}, {"c4": passages["c4"]}, {"s": {"c4"}})
    return val, passages, chunk_docs


def test_judged_documents_join_the_corpus_and_queries_without_one_are_left_out() -> None:
    val, passages, chunk_docs = _val()
    qrels = {"q1": {"d0": 1, "gone": 2}, "q2": {"d5": 2}, "q3": {"gone": 1}, "q4": {"d1": 1}}
    kept = add_judged(val, {"q1": "first", "q2": " second ", "q3": "third", "q4": "  "}, qrels, passages, chunk_docs)
    assert kept == 2 and val.judged == {"q1": {"d0": 1}, "q2": {"d5": 2}}  # q3: no document here; q4: no text
    assert val.judged_queries == {"q1": "first", "q2": "second"}
    assert set(val.corpus) == {"c4", "c0", "c1", "c6", "c7"}  # every chunk of d0 and d5, the synthetic one kept
    assert val.chunk_docs == {c: chunk_docs[c] for c in val.corpus}


def test_evaluator_ranks_a_document_at_its_best_chunk() -> None:
    val, passages, chunk_docs = _val()
    val.corpus = dict(passages)
    add_judged(val, {"a": "x", "b": "y"}, {"a": {"d0": 1}, "b": {"d2": 1}}, passages, chunk_docs)
    ev = MatryoshkaRetrievalEvaluator(val, [8, 4], signal="judged")
    assert ev.primary_metric == "val_judged_ndcg@10_d8"
    cv = np.eye(8, dtype=np.float32)
    cv[1] = cv[0] * 0.9 + cv[1] * 0.1  # c1 (d0) next to c0 (d0): the fold must list d0 once
    qa = cv[[0]] + 0.01 * cv[[1]]   # a: c0 then c1 (both d0) first → d0 at rank 1
    qb = cv[[2]] + 0.5 * cv[[3]]     # b: c2 (d1) then c3 (d2) → d2 at rank 2
    m = ev.metrics_for(cv[[4]], cv, np.concatenate([qa, qb]))
    assert m["val_judged_ndcg@10_d8"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert m["val_judged_mrr@10_d8"] == pytest.approx(0.75)
    assert m["val_ndcg@10_d8"] == pytest.approx(1.0)  # the synthetic query sits on its chunk c4
    assert "val_judged_ndcg@10_d4" in m
    assert "val_judged_ndcg@10_d8" not in ev.metrics_for(cv[[4]], cv)  # no judged vectors: no judged metrics


def test_judged_signal_needs_judged_queries() -> None:
    val, _, _ = _val()
    with pytest.raises(ValueError, match="judged queries"):
        MatryoshkaRetrievalEvaluator(val, [8], signal="judged")
    with pytest.raises(ValidationError, match="judged_queries"):
        TrainConfig(validation="judged")
    assert TrainConfig(validation="judged", judged_queries="beir:scifact", judged_split="train").judged_split == "train"


def test_load_judged_reads_one_split_and_names_the_bad_file(tmp_path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n')
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n2\td9\t1\n2\td8\t0\n")
    assert load_judged(tmp_path, "dev") == ({"2": "two"}, {"2": {"d9": 1}})
    with pytest.raises(BeirFormatError, match=r"missing qrels/test\.tsv"):
        load_judged(tmp_path, "test")
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n3\td9\t1\n")
    with pytest.raises(BeirFormatError, match=r"dev\.tsv: 1 judged queries are not in queries\.jsonl"):
        load_judged(tmp_path, "dev")
