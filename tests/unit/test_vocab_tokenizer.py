"""Domain tokenizer training: base pipeline kept, special tokens at the base ids, versioned artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from embedforge.vocab.analysis import analyze, load_tokenizer, tokenizer_view
from embedforge.vocab.corpus import SourceReader
from embedforge.vocab.tokenizer_training import save_hf_dir, save_versioned, special_tokens, train_tokenizer

BERT_SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


@pytest.fixture(scope="module")
def base(minilm_path: Path) -> Tokenizer:
    return load_tokenizer(minilm_path).tokenizer


@pytest.fixture(scope="module")
def adi_texts() -> list[str]:
    return [t for batch in SourceReader("builtin:adi").batches() for t in batch]


@pytest.fixture(scope="module")
def trained(base: Tokenizer, adi_texts: list[str]) -> Tokenizer:
    return train_tokenizer(adi_texts * 3, base, vocab_size=2000)


def test_special_tokens_keep_base_ids(base: Tokenizer, trained: Tokenizer) -> None:
    assert special_tokens(base) == BERT_SPECIALS
    assert special_tokens(trained) == BERT_SPECIALS
    for token, token_id in BERT_SPECIALS.items():
        assert trained.token_to_id(token) == token_id
        assert trained.id_to_token(token_id) == token
    enc = trained.encode("Indexing of documents")
    assert enc.ids[0] == 101 and enc.ids[-1] == 102
    assert trained.encode("a", "b").ids.count(102) == 2


def test_base_pipeline_is_kept(base: Tokenizer, trained: Tokenizer) -> None:
    b, t = json.loads(base.to_str()), json.loads(trained.to_str())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert t[part] == b[part], part
    assert t["model"]["type"] == "WordPiece" and t["model"]["unk_token"] == "[UNK]"
    assert trained.encode("INDEXING").tokens == trained.encode("indexing").tokens  # base normalizer lower-cases
    ids = set(json.loads(trained.to_str())["model"]["vocab"].values())
    assert ids == set(range(len(ids)))  # no holes in the id space


def test_domain_terms_get_fewer_pieces(base: Tokenizer, trained: Tokenizer, adi_texts: list[str]) -> None:
    analysis = analyze([adi_texts], [tokenizer_view(base, "base"), tokenizer_view(trained, "trained")])
    terms = analysis.fragmented_terms(min_pieces=3, min_frequency=2, top=20)
    assert len(terms) >= 5
    base_pieces = sum(len(t.pieces) for t in terms)
    new_pieces = sum(len(trained.encode(t.term, add_special_tokens=False).ids) for t in terms)
    assert new_pieces < base_pieces  # the corpus's own jargon is less shredded by its own vocabulary
    assert trained.get_vocab_size() <= 2000


def test_bpe_on_a_bert_base_also_aligns(base: Tokenizer, adi_texts: list[str]) -> None:
    bpe = train_tokenizer(adi_texts, base, algorithm="bpe", vocab_size=1000)
    assert json.loads(bpe.to_str())["model"]["type"] == "BPE"
    assert special_tokens(bpe) == BERT_SPECIALS


def test_versioned_artifact_and_hf_dir(trained: Tokenizer, minilm_path: Path, tmp_path: Path) -> None:
    import hashlib

    from transformers import AutoTokenizer

    art = save_versioned(trained, tmp_path, "wordpiece")
    assert art.path.name == f"tokenizer-{art.sha256[:12]}.json"
    assert hashlib.sha256(art.path.read_bytes()).hexdigest() == art.sha256
    assert art.manifest()["special_tokens"] == BERT_SPECIALS
    hf = AutoTokenizer.from_pretrained(str(save_hf_dir(trained, minilm_path, tmp_path / "hf")), local_files_only=True)
    assert (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.unk_token_id, hf.mask_token_id) == (101, 102, 0, 100, 103)
    assert hf("indexing")["input_ids"] == trained.encode("indexing").ids


def test_bad_inputs(base: Tokenizer) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([], base, vocab_size=500)
    with pytest.raises(ValueError, match=r"cannot keep special token \[MASK\] at its base id 103"):
        train_tokenizer(["some text"], base, vocab_size=128 - 30)
