"""Each query filter, the per-rule counts, and the non-LLM query sources."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.generation.filters import (
    Candidate,
    FilterSettings,
    copies_passage,
    filter_candidates,
    jaccard,
    length_ok,
    longest_common_span,
    near_duplicate_mask,
    normalize_query,
    roundtrip_mask,
)
from embedforge.generation.prompts import PromptBuilder, build_prompts, check_template, cut_text
from embedforge.generation.sources import (
    KeywordIdf,
    ict_queries,
    keyword_query,
    sentences,
    stable_fraction,
    title_query,
)

PASSAGE = ("Automatic indexing assigns index terms to documents without human effort. Early systems used word "
           "frequencies to pick terms. Later systems weighted terms by their rarity across the collection.")


def cand(query: str, kind: str = "llm", chunk: str = "c1", passage: str = PASSAGE) -> Candidate:
    return Candidate(chunk, "d1", passage, query, kind, "gen", "ph")


def test_normalize() -> None:
    assert normalize_query("  “What   is   indexing ?” ") == "What is indexing?"
    assert normalize_query("\uff21utomatic  indexing ,") == "Automatic indexing"


def test_length_bounds() -> None:
    assert not length_ok("indexing", 2, 5)
    assert length_ok("automatic indexing", 2, 5)
    assert not length_ok("one two three four five six", 2, 5)


def test_verbatim_copy() -> None:
    assert longest_common_span("x assigns index terms to documents y", PASSAGE) == 5
    assert copies_passage("automatic indexing assigns index terms to documents without human effort", PASSAGE, 8)
    assert not copies_passage("how are index terms chosen automatically?", PASSAGE, 8)


def test_near_duplicates() -> None:
    assert jaccard("automatic indexing of documents", "documents automatic indexing of") == 1.0
    mask = near_duplicate_mask(["what is automatic indexing", "what is automatic indexing?", "term weighting"], 0.8)
    assert mask == [True, False, True]


def test_roundtrip_keeps_only_queries_whose_chunk_ranks_top_k() -> None:
    corpus = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0, 0.1, 0.9, 0], [0, 0.6, 0.5, 0.4]], dtype=np.float32)
    assert roundtrip_mask(queries, corpus, [0, 1, 3], k=1) == [True, False, False]
    assert roundtrip_mask(queries, corpus, [0, 1, 3], k=3) == [True, True, True]


def test_filter_pipeline_counts_each_rule() -> None:
    seen = {"term weighting schemes"}
    candidates = [
        cand("  "),                                                            # empty
        cand("indexing"),                                                      # length (1 word)
        cand("automatic indexing assigns index terms to documents without human effort"),  # verbatim copy
        cand("Early systems used word frequencies to pick terms and more words here.", kind="ict"),  # exempt
        cand("Term weighting schemes"),                                        # exact duplicate of an earlier shard
        cand("how are index terms chosen?"),
        cand("How are index terms chosen"),                                    # exact duplicate (same words)
        cand("how are the index terms chosen?"),                               # near duplicate (same chunk)
        cand("how are the index terms chosen?", chunk="c2"),                   # exact duplicate across chunks
        cand("which terms does indexing pick?", chunk="c2"),                   # round-trip fails
        cand("rarity weighting of terms"),
    ]

    def roundtrip(cs: list[Candidate]) -> list[bool]:
        return [c.chunk_id == "c1" for c in cs]

    settings = FilterSettings(min_words=2, max_words=12, max_copied_words=8, near_duplicate_jaccard=0.8,
                              roundtrip_top_k=3)
    kept, dropped = filter_candidates(candidates, settings, seen, roundtrip)
    assert [c.query for c in kept] == ["Early systems used word frequencies to pick terms and more words here.",
                                       "how are index terms chosen?", "rarity weighting of terms"]
    assert dropped == {"empty": 1, "length": 1, "verbatim_copy": 1, "exact_duplicate": 3, "near_duplicate": 1,
                       "roundtrip": 1}
    assert sum(dropped.values()) + len(kept) == len(candidates)
    assert "rarity weighting of terms" in seen and "how are the index terms chosen" not in seen


def test_title_source() -> None:
    assert title_query(0, "Automatic Indexing Methods.") == "Automatic Indexing Methods"
    assert title_query(1, "Automatic Indexing Methods") is None
    assert title_query(0, "Indexing") is None
    assert title_query(0, None) is None


def test_ict_source_is_deterministic_and_needs_two_sentences() -> None:
    assert len(sentences(PASSAGE)) == 3
    first = ict_queries("c1", PASSAGE, 1, 6, seed=7)
    assert first == ict_queries("c1", PASSAGE, 1, 6, seed=7)
    assert first[0] in sentences(PASSAGE)
    assert len(ict_queries("c1", PASSAGE, 5, 6, seed=7)) == 3
    assert ict_queries("c1", "Only one sentence with enough words in it.", 1, 3, seed=7) == []


def test_keyword_source_prefers_rare_terms() -> None:
    corpus = [PASSAGE, "Documents and terms appear in every text about documents.", "Terms and documents again."]
    idf = KeywordIdf.fit(corpus)
    query = keyword_query(PASSAGE, idf, 3)
    assert query is not None and len(query.split()) == 3
    assert "documents" not in query.split()
    assert keyword_query("the and of", idf, 3) is None


def test_stable_fraction_is_uniform_enough() -> None:
    values = [stable_fraction("split", f"doc{i}") for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.07 < sum(v < 0.1 for v in values) / 2000 < 0.13


def test_prompts_fill_templates_and_hash_settings() -> None:
    builder = PromptBuilder("Passage{title_part}: {text}\nWrite {n} queries.", "sys", 3, 40, {"temperature": 0.7})
    prompts = build_prompts([{"text": PASSAGE, "title": "Indexing"}], {"list": builder})
    assert prompts[0].messages[0] == {"role": "system", "content": "sys"}
    assert prompts[0].messages[1]["content"].startswith("Passage (title: Indexing): Automatic indexing")
    assert prompts[0].messages[1]["content"].endswith("…\nWrite 3 queries.")
    other = PromptBuilder("Passage{title_part}: {text}\nWrite {n} queries.", "sys", 3, 40, {"temperature": 0.9})
    assert builder.hash() != other.hash()
    assert len(cut_text(PASSAGE, 40)) <= 42
    with pytest.raises(ValueError, match="bad field"):
        check_template("Passage: {text} {passage}")


def test_vllm_dtype_auto_follows_the_cpu(monkeypatch, caplog) -> None:
    """bf16 only where the CPU computes it natively: emulated bf16 generated ~4x slower than fp32."""
    from embedforge import device as dev

    assert dev.vllm_dtype("auto") == ("bfloat16" if dev.cpu_native_bf16() else "float32")  # this machine
    assert dev.vllm_dtype("float16") == "float16"  # an explicit choice is kept
    monkeypatch.setattr(dev, "cpu_native_bf16", lambda: False)
    assert dev.vllm_dtype("auto") == "float32"
    with caplog.at_level("WARNING", logger="embedforge.device"):
        assert dev.vllm_dtype("bfloat16") == "bfloat16"
    assert "emulated" in caplog.text
    monkeypatch.setattr(dev, "cpu_native_bf16", lambda: True)
    assert dev.vllm_dtype("auto") == "bfloat16"
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.vllm_dtype("auto") == "auto"  # vLLM's own choice on GPUs
