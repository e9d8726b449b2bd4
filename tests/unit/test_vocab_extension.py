"""Vocabulary extension: whole-word tokens, mean-of-pieces rows, and old texts embed exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedforge.training.vocab_extension import EXTENSION_JSON, extend_model, load_extension

TERMS = ["chromatin", "apoptosis", "phosphorylation", "cat", "Chromatin", "chromatin"]
OLD_TEXTS = [
    "Cats sit on mats in the sun.",
    "Chromatinization and hyperchromatin differ from chromatins.",  # contain a term only as part of a word
    "chromatin_remodeling, pre-apoptosis42 and phosphorylations",
    "A plain sentence about information retrieval systems.",
]


@pytest.fixture(scope="module")
def extended(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from sentence_transformers import SentenceTransformer

    out = tmp_path_factory.mktemp("ext") / "model"
    result = extend_model(minilm_path, TERMS, out)
    return result, SentenceTransformer(str(out), device="cpu")


def test_added_and_skipped_terms(extended) -> None:
    result, _ = extended
    assert [a.term for a in result.added] == ["chromatin", "apoptosis", "phosphorylation"]
    assert result.added[0].pieces == ("ch", "##rom", "##atin")
    assert [a.token_id for a in result.added] == [30522, 30523, 30524]
    assert result.vocab_size == result.base_vocab_size + 3
    assert "fewer than min_pieces" in result.skipped["cat"]
    assert "normalizes to 'chromatin'" in result.skipped["Chromatin"]
    saved = load_extension(result.model_dir)
    assert [a["term"] for a in saved["added"]] == ["chromatin", "apoptosis", "phosphorylation"]
    assert (result.model_dir / EXTENSION_JSON).is_file()


def test_old_texts_tokenize_identically(extended, st_model) -> None:
    _, model = extended
    for text in OLD_TEXTS:
        assert model.tokenizer(text)["input_ids"] == st_model.tokenizer(text)["input_ids"], text


def test_new_terms_are_single_tokens_even_in_capitals(extended) -> None:
    result, model = extended
    ids = model.tokenizer("Chromatin, APOPTOSIS; chromatin-bound.", add_special_tokens=False)["input_ids"]
    assert ids.count(result.added[0].token_id) == 2 and result.added[1].token_id in ids


def test_old_texts_embed_exactly_as_before(extended, st_model) -> None:
    _, model = extended
    before = st_model.encode(OLD_TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    after = model.encode(OLD_TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose((before * after).sum(axis=1), 1.0, atol=1e-6)


def test_new_rows_are_the_mean_of_their_pieces(extended, st_model) -> None:
    result, model = extended
    old = st_model[0].auto_model.get_input_embeddings().weight.detach()
    new = model[0].auto_model.get_input_embeddings().weight.detach()
    assert new.shape == (old.shape[0] + 3, old.shape[1])
    assert torch.equal(new[: old.shape[0]], old)  # old rows untouched
    for added in result.added:
        torch.testing.assert_close(new[added.token_id], old[list(added.piece_ids)].mean(dim=0), rtol=0, atol=1e-7)
