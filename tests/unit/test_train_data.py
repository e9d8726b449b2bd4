"""Train config validation, training rows from triples/queries, the validation split, and the retrieval metric."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from embedforge.configs.train import TrainConfig
from embedforge.data.schemas import TRIPLES
from embedforge.data.shards import ShardWriter, shard_name
from embedforge.spec import SpecError, validate_dict
from embedforge.training.data import (
    cut_sentence,
    held_out,
    rows_from_queries,
    rows_from_triples,
    select_queries,
    split_queries,
    validation_set,
)
from embedforge.training.losses import TrainConfigError, check_loss_data, check_matryoshka_dims


def test_matryoshka_dims_must_be_sorted_descending_and_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"stages\.train\.matryoshka_dims.*sorted descending"):
        validate_dict({"stages": {"train": {"matryoshka_dims": [64, 128]}}})
    with pytest.raises(ValidationError, match="distinct"):
        TrainConfig(matryoshka_dims=[128, 128])
    with pytest.raises(ValidationError, match="matryoshka_weights has 1 values"):
        TrainConfig(matryoshka_dims=[384, 64], matryoshka_weights=[1.0])
    assert TrainConfig().matryoshka_dims == [384, 256, 128, 64]
    assert TrainConfig(matryoshka_dims=[]).matryoshka_dims == []


def test_matryoshka_dims_are_checked_against_the_model_dimension() -> None:
    assert check_matryoshka_dims([384, 64], 384) == [384, 64]
    with pytest.raises(TrainConfigError, match=r"train\.matryoshka_dims: \[768\] larger than .* 384"):
        check_matryoshka_dims([768, 384], 384)


def test_hashed_fields_leave_out_speed_only_settings() -> None:
    from embedforge.configs.base import hashed_fields

    fields = hashed_fields(TrainConfig())
    assert "learning_rate" in fields and "batch_size" in fields
    assert "mini_batch_size" not in fields and "eval_corpus_max" not in fields


def test_triplet_needs_negatives_and_accumulation_warns(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(TrainConfigError, match="triplet.*hard negatives"):
        check_loss_data(TrainConfig(loss="triplet"), n_negatives=0)
    check_loss_data(TrainConfig(loss="triplet"), n_negatives=1)
    with caplog.at_level(logging.WARNING, logger="embedforge.train"):
        check_loss_data(TrainConfig(gradient_accumulation_steps=4), n_negatives=0)
    assert "does not add in-batch negatives" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="embedforge.train"):
        check_loss_data(TrainConfig(loss="triplet", gradient_accumulation_steps=4), n_negatives=1)
    assert caplog.text == ""


def _queries() -> list[dict]:
    return [{"query_id": f"q{i}", "chunk_id": f"doc{i % 10:02d}abcdefghijkl-{i % 3}", "query": f"query {i}",
             "split": "val" if i % 10 == 0 else "train"} for i in range(40)]


def test_split_uses_the_val_column_else_holds_out_whole_documents() -> None:
    qs = _queries()
    train, val = split_queries(qs, 0.5, seed=1)
    assert val == {q["query_id"] for q in qs if q["split"] == "val"} and not train & val
    no_val = [{**q, "split": "train"} for q in qs]
    train, val = split_queries(no_val, 0.5, seed=1)
    assert val and train and not train & val
    docs_val = {q["chunk_id"].rsplit("-", 1)[0] for q in no_val if q["query_id"] in val}
    docs_train = {q["chunk_id"].rsplit("-", 1)[0] for q in no_val if q["query_id"] in train}
    assert not docs_val & docs_train  # held out by document, never by query
    assert held_out("d", 0.0, 1) is False
    assert split_queries(no_val, 0.5, seed=1) == (train, val)  # seeded


def test_rows_from_queries_join_passages_and_quarantine_unusable_rows() -> None:
    qs = _queries() + [{"query_id": "empty", "chunk_id": "doc01abcdefghijkl-1", "query": " ", "split": "train"},
                       {"query_id": "orphan", "chunk_id": "nope-0", "query": "lost", "split": "train"}]
    passages = {q["chunk_id"]: f"passage of {q['chunk_id']}" for q in _queries()}
    train, _ = split_queries(qs, 0.1, seed=0)
    rows = rows_from_queries(qs, passages, train, ["s.parquet"])
    assert len(rows) == 36 and rows.n_negatives == 0 and rows.source == "queries"
    assert rows.columns["positive"][0] == passages[qs[1]["chunk_id"]]
    reasons = {r["query_id"]: r["reason"] for r in rows.quarantine}
    assert reasons["empty"] == "empty query" and "not in the chunk shards" in reasons["orphan"]


def test_rows_from_triples_are_rectangular_and_exclude_validation(tmp_path: Path) -> None:
    rows = [{"query_id": f"q{i}", "query": f"query {i}", "pos_chunk_id": f"d{i}-0", "positive": f"pos {i}",
             "neg_chunk_ids": [f"n{i}-{j}" for j in range(3 if i else 1)],
             "negatives": [f"neg {i} {j}" for j in range(3 if i else 1)], "pos_score": 0.9,
             "neg_scores": [0.5] * (3 if i else 1)} for i in range(6)]
    ShardWriter(tmp_path).write(shard_name(0), pa.Table.from_pylist(rows, schema=TRIPLES))
    out = rows_from_triples(tmp_path, max_negatives=2, exclude_ids={"q5"})
    assert out.n_negatives == 2 and len(out) == 4  # q0 has one negative → quarantined; q5 is validation
    assert out.columns["negative_2"][0] == "neg 1 1"
    assert [r["query_id"] for r in out.quarantine] == ["q0"]
    assert list(out.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert rows_from_triples(tmp_path, max_negatives=0, exclude_ids=set()).n_negatives == 0


def test_validation_corpus_keeps_relevant_passages_under_the_cap() -> None:
    qs = _queries()
    passages = {f"c{i}": f"p{i}" for i in range(100)} | {q["chunk_id"]: "rel" for q in qs}
    _, val_ids = split_queries(qs, 0.1, seed=0)
    val = validation_set(qs, passages, val_ids, corpus_max=20, seed=3)
    assert len(val) == 4 and len(val.corpus) == 20
    assert all(next(iter(val.relevant[q])) in val.corpus for q in val.queries)


def test_select_queries_filters_kinds_and_cuts_most_ict_sentences() -> None:
    qs = [{"query_id": f"q{i}", "kind": kind, "query": "x", "chunk_id": "d-0", "split": "train"}
          for i, kind in enumerate(["llm", "ict", "title", "keyword"] * 100)]
    only, strip = select_queries(qs, ["ict", "title"], ict_keep_sentence=0.1, seed=3)
    assert only == {q["query_id"] for q in qs if q["kind"] in ("ict", "title")}
    assert strip <= {q["query_id"] for q in qs if q["kind"] == "ict"}
    assert 80 <= len(strip) <= 98  # ~90% of the 100 ICT queries lose their sentence, seeded
    assert select_queries(qs, None, 0.1, seed=3)[1] == strip and select_queries(qs, None, 0.1, seed=3)[0] is None
    assert select_queries(qs, None, 1.0, seed=3)[1] == set()
    with pytest.raises(ValueError, match="query_kinds needs the generate stage"):
        select_queries([{"query_id": "a", "chunk_id": "d-0", "query": "x", "split": "train"}], ["ict"], 0.1, 0)


def test_cut_sentence_removes_the_query_sentence_only_when_verbatim() -> None:
    passage = "Title\n\nFirst finding here. The drug lowers blood pressure. Last point."
    assert cut_sentence(passage, "The drug lowers blood pressure.") == "Title\n\nFirst finding here. Last point."
    assert cut_sentence(passage, "Not in it.") == passage
    assert cut_sentence(passage, " ") == passage


def test_rows_from_triples_keep_only_selected_ids_and_cut_ict_sentences(tmp_path: Path) -> None:
    rows = [{"query_id": f"q{i}", "query": f"Sentence {i}.", "pos_chunk_id": f"d{i}-0",
             "positive": f"Intro. Sentence {i}. Outro.", "neg_chunk_ids": ["n-0"], "negatives": ["neg"],
             "pos_score": 0.9, "neg_scores": [0.5]} for i in range(4)]
    ShardWriter(tmp_path).write(shard_name(0), pa.Table.from_pylist(rows, schema=TRIPLES))
    out = rows_from_triples(tmp_path, 1, exclude_ids=set(), only_ids={"q1", "q2", "q3"}, strip_ids={"q2"})
    assert out.columns["anchor"] == ["Sentence 1.", "Sentence 2.", "Sentence 3."]
    assert out.columns["positive"] == ["Intro. Sentence 1. Outro.", "Intro. Outro.", "Intro. Sentence 3. Outro."]
