"""Vocabulary analysis: word definition, ratio on hand-made text, [UNK] rate, fragmented terms, bad corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedforge.vocab.analysis import analyze, load_tokenizer, words
from embedforge.vocab.corpus import CorpusError, SourceReader
from embedforge.vocab.report import HISTOGRAM_PNG, REPORT_MD, STATS_JSON, TERMS_TSV, write_report


@pytest.fixture(scope="module")
def base(minilm_path: Path):
    return load_tokenizer(minilm_path, name="minilm")


def test_words_are_letter_digit_runs() -> None:
    assert words("IL-6 and p53 in β-cells_x, 2.5 mg!") == ["IL", "6", "and", "p53", "in", "β", "cells", "x", "2",
                                                           "5", "mg"]


def test_ratio_on_hand_made_text(base) -> None:
    # MiniLM's WordPiece: the → 1, cat → 1, chromatin → ch ##rom ##atin (3); punctuation ',' '.' → 1 each
    assert base.tokenizer.encode("chromatin", add_special_tokens=False).tokens == ["ch", "##rom", "##atin"]
    analysis = analyze([["the cat, chromatin.", "chromatin chromatin"]], [base])
    stats = analysis.tokenizers[0]
    assert stats.words == 5
    assert stats.word_tokens == 1 + 1 + 3 + 3 + 3
    assert stats.ratio == pytest.approx(11 / 5)
    assert stats.all_tokens == 11 + 2  # the two punctuation tokens count only in the all-token ratio
    assert stats.doc_ratios == pytest.approx([5 / 3, 3.0])
    assert analysis.term_counts["chromatin"] == 3


def test_unk_rate_and_case_folded_terms(base) -> None:
    analysis = analyze([["Hello \U0001F99C", "HELLO hello"]], [base])
    stats = analysis.tokenizers[0]
    assert stats.unk_tokens == 1  # the parrot emoji is not in BERT's vocabulary and is no word
    assert stats.unk_rate == pytest.approx(1 / 4)
    assert analysis.term_counts == {"hello": 3}  # terms are words after the base normalizer (lower case)


def test_fragmented_terms_are_frequent_and_shredded(base) -> None:
    text = "chromatin chromatin chromatin apoptosis apoptosis phosphorylation the the the the cat"
    analysis = analyze([[text]], [base])
    terms = analysis.fragmented_terms(min_pieces=3, top=10, min_frequency=2)
    assert [t.term for t in terms] == ["chromatin", "apoptosis"]  # by frequency; once-only and 1-piece words out
    assert terms[0].frequency == 3 and terms[0].pieces == ("ch", "##rom", "##atin")
    assert [t.term for t in analysis.fragmented_terms(min_pieces=5, min_frequency=1)] == ["phosphorylation"]


def test_decision_follows_threshold(base) -> None:
    analysis = analyze([["chromatin apoptosis"]], [base])  # 6 tokens / 2 words = 3.0
    assert analysis.decision(1.25)["extend"] is True
    assert analysis.decision(3.0)["extend"] is False


def test_comparison_across_tokenizers(base, tmp_path: Path) -> None:
    from tokenizers import AddedToken

    other = load_tokenizer(_save(base, tmp_path), name="with chromatin")
    other.tokenizer.add_tokens([AddedToken("chromatin", single_word=True, normalized=True)])
    analysis = analyze([["chromatin and the cat"]], [base, other])
    assert [s.word_tokens for s in analysis.tokenizers] == [6, 4]
    summary = write_report(analysis, tmp_path / "report", threshold=1.25, source="hand-made")
    assert [t["name"] for t in summary["tokenizers"]] == ["minilm", "with chromatin"]
    for name in (REPORT_MD, HISTOGRAM_PNG, STATS_JSON, TERMS_TSV):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert (tmp_path / "report" / HISTOGRAM_PNG).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report" / STATS_JSON).read_text())["decision"]["extend"] is True


def _save(view, tmp_path: Path) -> Path:
    path = tmp_path / "copy.json"
    view.tokenizer.save(str(path))
    return path


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(CorpusError, match="no usable documents"):
        list(SourceReader(str(empty)).batches())


def test_binary_corpus_is_a_clear_error(tmp_path: Path) -> None:
    blob = bytes(range(128, 256)) * 40
    binary = tmp_path / "corpus.jsonl"
    binary.write_bytes(blob + b"\n" + blob)
    with pytest.raises(CorpusError, match=r"no usable documents; 2 unusable rows \(invalid UTF-8.*corpus.jsonl:1"):
        list(SourceReader(str(binary)).batches())
    fake = tmp_path / "corpus.parquet"
    fake.write_bytes(blob)
    with pytest.raises(CorpusError, match="corpus.parquet: .*not a parquet file"):
        list(SourceReader(str(fake)).batches())


def test_corpus_without_words_is_a_clear_error(base, tmp_path: Path) -> None:
    path = tmp_path / "symbols.jsonl"
    path.write_text(json.dumps({"_id": "1", "text": "!!! ... ---"}) + "\n")
    reader = SourceReader(str(path))
    with pytest.raises(ValueError, match=r"no words in the corpus \(1 documents\)"):
        analyze(reader.batches(), [base])
