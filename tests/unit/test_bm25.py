"""BM25 with Snowball stemming: inflected forms match, the setting travels with a saved index, bad names are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from embedforge.configs.embed import IndexConfig
from embedforge.configs.evaluate import EvaluateConfig
from embedforge.search.bm25 import BM25Retriever

CORPUS = ["The cells were running out of glucose.", "A dog barked at the mailman.", "Proteins fold in water."]


def test_stemming_matches_inflected_forms_that_plain_words_miss() -> None:
    query = ["cell runs", "protein folding"]
    stemmed_scores, stemmed_ids = BM25Retriever(CORPUS).search(query, k=1)  # english stemming by default
    assert stemmed_ids[:, 0].tolist() == [0, 2] and (stemmed_scores[:, 0] > 0).all()
    plain_scores, _ = BM25Retriever(CORPUS, stemmer=None).search(query, k=1)
    assert (plain_scores[:, 0] == 0).all()  # "cell" ≠ "cells", "runs" ≠ "running", "folding" ≠ "fold"


def test_saved_index_keeps_its_stemmer_and_old_indexes_load_unstemmed(tmp_path: Path) -> None:
    bm = BM25Retriever(CORPUS)
    bm.save(tmp_path / "stemmed")
    loaded = BM25Retriever.load(tmp_path / "stemmed")
    assert loaded.stemmer == "english"
    for got, want in zip(loaded.search(["cell runs"], k=3), bm.search(["cell runs"], k=3), strict=True):
        np.testing.assert_array_equal(got, want)
    # an index written before stemming existed has no "stemmer" key: its words were stored unstemmed
    BM25Retriever(CORPUS, stemmer=None).save(tmp_path / "old")
    settings = tmp_path / "old" / "tokenization.json"
    old = json.loads(settings.read_text())
    settings.write_text(json.dumps({k: v for k, v in old.items() if k != "stemmer"}))
    assert BM25Retriever.load(tmp_path / "old").stemmer is None
    assert BM25Retriever.load(tmp_path / "old").search(["cells"], k=1)[1][0, 0] == 0


def test_unknown_stemmer_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(ValidationError, match="bm25_stemmer") as err:
        EvaluateConfig(bm25_stemmer="klingon")
    assert "no Snowball stemmer 'klingon'" in str(err.value) and "german" in str(err.value)
    with pytest.raises(ValidationError, match="no Snowball stemmer 'Englisch'"):
        IndexConfig(bm25=True, bm25_stemmer="Englisch")
    assert EvaluateConfig(bm25_stemmer=None).bm25_stemmer is None
