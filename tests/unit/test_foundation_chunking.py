"""Token-aware chunking: limits, boundaries, offsets, overlap, tail merging."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedforge.data.chunking import TokenCounter, chunk_text


@pytest.fixture(scope="module")
def counter(minilm_path: Path) -> TokenCounter:
    return TokenCounter(minilm_path)


LONG = "\n\n".join(
    " ".join(f"Sentence {p}.{s} discusses electroencephalography and immunohistochemistry results in detail."
             for s in range(6)) for p in range(8))


def _full_tokens(counter: TokenCounter, text: str) -> int:
    return len(counter.tokenizer.encode(text, add_special_tokens=True).ids)


@pytest.mark.parametrize("max_tokens", [32, 64, 128, 512])
def test_chunks_respect_limit_and_are_exact_slices(counter: TokenCounter, max_tokens: int) -> None:
    chunks = chunk_text(LONG, counter, max_tokens=max_tokens)
    limit = min(max_tokens, counter.max_seq_length)
    assert len(chunks) > 1
    for c in chunks:
        piece = LONG[c.start:c.end]
        assert _full_tokens(counter, piece) == c.n_tokens <= limit
        assert piece == piece.strip()
        # never inside a word: the characters around the cut are not both word characters
        if c.start > 0:
            assert not (LONG[c.start - 1].isalnum() and LONG[c.start].isalnum())
        if c.end < len(LONG):
            assert not (LONG[c.end - 1].isalnum() and LONG[c.end].isalnum())
    words = re.findall(r"\w+", LONG)
    assert re.findall(r"\w+", " ".join(LONG[c.start:c.end] for c in chunks)) == words  # nothing lost, no overlap


def test_model_max_length_caps_the_limit(counter: TokenCounter) -> None:
    assert counter.max_seq_length == 256
    assert max(c.n_tokens for c in chunk_text(LONG, counter, max_tokens=512)) <= 256


def test_paragraphs_are_preferred_cut_points(counter: TokenCounter) -> None:
    text = "Short first paragraph here.\n\nSecond paragraph is also short."
    chunks = chunk_text(text, counter, max_tokens=12)
    assert [text[c.start:c.end] for c in chunks] == ["Short first paragraph here.", "Second paragraph is also short."]


def test_a_single_huge_word_run_is_cut_at_word_starts(counter: TokenCounter) -> None:
    text = " ".join(["supercalifragilistic"] * 200)  # no sentence or paragraph boundary at all
    chunks = chunk_text(text, counter, max_tokens=40)
    assert all(c.n_tokens <= 40 for c in chunks)
    assert all(text[c.start:c.end].split(" ")[0] == "supercalifragilistic" for c in chunks)


def test_overlap_repeats_whole_sentences(counter: TokenCounter) -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    chunks = chunk_text(text, counter, max_tokens=48, overlap_tokens=10)
    assert len(chunks) > 2
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # overlapping
        assert text[b.start:a.end].startswith("Sentence")


def test_tiny_tail_is_rebalanced(counter: TokenCounter) -> None:
    sentence = "A sentence with several words in it."
    text = (sentence + " ") * 4 + "Tail."
    limit = counter.special + 4 * counter.count([sentence])[0] + 1  # four sentences fit, the tail does not
    without = chunk_text(text, counter, max_tokens=limit, min_tokens=0)
    assert text[without[-1].start:without[-1].end] == "Tail."
    balanced = chunk_text(text, counter, max_tokens=limit, min_tokens=8)
    assert len(balanced) == len(without) and balanced[-1].n_tokens >= 8
    assert text[balanced[-1].start:balanced[-1].end].endswith("in it. Tail.")
    assert all(c.n_tokens <= limit for c in balanced)
