"""Scoring documents by their best passage (MaxP): passage splitting, exact document ranking from passage hits,
and ``score_by: best_passage`` rows of the evaluation harness on real SciFact abstracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.data.chunking import TokenCounter, passages
from embedforge.evaluation.harness import ModelRef, evaluate_models
from embedforge.evaluation.report import write_mteb_results
from embedforge.search.index import search
from embedforge.search.passages import best_passage, passages_to_fetch


def _brute_force_maxp(scores: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """Every document's best passage score, then the top ``k`` documents (ties: lower row first)."""
    doc_scores = np.full((scores.shape[0], owner.max() + 1), -np.inf)
    for p, d in enumerate(owner):
        doc_scores[:, d] = np.maximum(doc_scores[:, d], scores[:, p])
    return np.argsort(-doc_scores, axis=1, kind="stable")[:, :k]


def test_best_passage_ranks_documents_exactly_as_brute_force_maxp() -> None:
    rng = np.random.default_rng(0)
    owner = np.sort(rng.integers(0, 60, size=300))
    owner = np.unique(owner, return_inverse=True)[1]  # every document row owns a passage
    corpus = rng.normal(size=(300, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    k = 10
    p_scores, p_ids = search(queries, corpus, passages_to_fetch(owner, k))
    scores, ids = best_passage(p_scores, p_ids, owner, k)
    assert np.array_equal(ids, _brute_force_maxp(queries @ corpus.T, owner, k))
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    # fewer documents than k: the rest is padded
    scores, ids = best_passage(np.array([[0.9, 0.8]], np.float32), np.array([[1, -1]]), owner, 3)
    assert ids.tolist() == [[owner[1], -1, -1]] and scores[0, 1] == -np.inf


def test_passages_fit_the_model_carry_the_title_and_cover_every_document(minilm_path: Path) -> None:
    counter = TokenCounter(minilm_path)
    long_body = " ".join(f"Sentence number {i} talks about protein folding in yeast cells." for i in range(120))
    titles = ["Folding", "Only a title", "", ""]
    bodies = [long_body, "", "A short abstract.", ""]
    texts, owner = passages(titles, bodies, counter, max_tokens=64)
    assert owner[0] == 0 and owner == sorted(owner) and set(owner) == {0, 1, 2, 3}
    first = [t for t, o in zip(texts, owner, strict=True) if o == 0]
    assert len(first) > 10
    assert all(t.startswith("Folding ") for t in first)  # the title is in every passage
    assert max(counter.count(first)) + counter.special <= 64
    # the passages' bodies, in order, are the whole document
    assert " ".join(t[len("Folding "):] for t in first).split() == long_body.split()
    assert texts[owner.index(1)] == "Only a title" and texts[owner.index(2)] == "A short abstract."
    assert texts[owner.index(3)] == ""  # an empty document is still one (empty) passage


def test_best_passage_rows_on_scifact_equal_maxp_computed_by_hand(scifact_slice: Path, encoder,
                                                                  tmp_path: Path) -> None:
    ds = load_beir(scifact_slice, "train")
    opts = EvaluateConfig(dims=[384, 96], quantizations=["none", "int8"], latency=False, n_resamples=200,
                          score_by="best_passage", passage_tokens=128)
    result = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2")], opts)
    rows = {(r["dim"], r["quantization"]): r for r in result.rows}
    assert set(rows) == {(384, "none"), (384, "int8"), (96, "none"), (96, "int8")}
    texts, owner = passages(ds.corpus_titles, ds.corpus_bodies, TokenCounter(encoder.path), 128)
    row = rows[(384, "none")]
    assert row["score_by"] == "best_passage" and row["n_passages"] == len(texts) > len(ds.corpus_ids)
    # the same ranking, computed from the passages' vectors without the harness
    p, q = encoder.encode(texts), encoder.encode(ds.query_texts)
    from embedforge.evaluation.retrieval_evaluator import RetrievalEvaluator

    expected = RetrievalEvaluator(ds)(_brute_force_maxp(q @ p.T, np.asarray(owner), 100))
    assert row["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"], abs=1e-4)
    # and it is a different ranking from one vector per document
    by_doc = evaluate_models([ds], [ModelRef("minilm", "all-MiniLM-L6-v2")],
                             opts.model_copy(update={"score_by": "document", "quantizations": ["none"]}))
    assert by_doc.rows[0]["n_passages"] == len(ds.corpus_ids)
    assert by_doc.rows[0]["ndcg_at_10"] != row["ndcg_at_10"]
    # MTEB scores one vector per document: best-passage rows are exported apart from it
    folders = {p.parts[-3] for p in write_mteb_results(result, tmp_path) + write_mteb_results(by_doc, tmp_path)}
    assert folders == {"minilm", "minilm__d96", "minilm__best_passage", "minilm__d96__best_passage"}


def test_passage_tokens_without_best_passage_is_refused() -> None:
    with pytest.raises(ValueError, match="applies only with score_by: best_passage"):
        EvaluateConfig(passage_tokens=128)
    assert EvaluateConfig(score_by="best_passage", passage_tokens=128).passage_tokens == 128
