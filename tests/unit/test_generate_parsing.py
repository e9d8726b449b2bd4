"""The LLM output parser on the messy outputs small models actually write."""

from __future__ import annotations

import pytest

from embedforge.generation.parsing import clean_query, parse_queries, parse_single

MESSY = [
    ("1. What is X?\n2. x uses\n3. X does Y.", ["What is X?", "x uses", "X does Y."]),
    ("Here are 3 queries:\n\n1) How do rockets work?\n2) rocket thrust\n3) Rockets push gas out.",
     ["How do rockets work?", "rocket thrust", "Rockets push gas out."]),
    ("- **Natural question:** \"How does photosynthesis work?\"\n* **Short keyword query:** photosynthesis plants\n"
     "• **Paraphrase:** Plants turn light into sugar.\n\nI hope this helps!",
     ["How does photosynthesis work?", "photosynthesis plants", "Plants turn light into sugar."]),
    ('```json\n{"queries": ["indexing methods", {"query": "what is a thesaurus?"}]}\n```',
     ["indexing methods", "what is a thesaurus?"]),
    ('["a", "retrieval evaluation measures", "  "]', ["a", "retrieval evaluation measures"]),
    ("Question: What limits recall?\nKeywords: recall limits\nParaphrase: Recall is bounded.",
     ["What limits recall?", "recall limits", "Recall is bounded."]),
    ("(1) first query here\n(2) second query here", ["first query here", "second query here"]),
    ("Q1: alpha beta\nQ2. gamma delta", ["alpha beta", "gamma delta"]),
    ("What causes rain?", ["What causes rain?"]),
]


@pytest.mark.parametrize(("raw", "expected"), MESSY)
def test_parses_messy_outputs(raw: str, expected: list[str]) -> None:
    assert parse_queries(raw) == expected


def test_limit_keeps_first_items() -> None:
    assert parse_queries("1. a b\n2. c d\n3. e f\n4. g h\n5. i j", limit=3) == ["a b", "c d", "e f"]


@pytest.mark.parametrize("raw", [
    "",
    "   \n\n",
    "Here are the queries:",
    "I'm sorry, as an AI language model I cannot write queries for this passage. It covers many topics in "
    "depth and the request is ambiguous.\nPlease give me more detail about what you need.\nThanks a lot, and "
    "also here is some more rambling prose that goes on.\nAnd on.",
    "1. ***\n2. ---",
])
def test_unparseable_gives_empty(raw: str) -> None:
    assert parse_queries(raw) == []


def test_broken_json_falls_back_to_lines() -> None:
    assert parse_queries('{"queries": ["a b", \n1. real query one\n2. real query two') == [
        "real query one", "real query two"]


def test_parse_single_takes_first() -> None:
    assert parse_single('"What is a document vector?"\nThis question asks about vectors.') == [
        "What is a document vector?"]


def test_clean_query_strips_markup_and_quotes() -> None:
    assert clean_query('  **Query:** “information   retrieval” ') == "information retrieval"
    assert clean_query('"unbalanced quote') == "unbalanced quote"


def test_label_only_item_takes_the_next_line() -> None:
    raw = "1. a natural question:\nHow is life science information distributed?\n2. A short keyword query: bio docs"
    assert parse_queries(raw) == ["How is life science information distributed?", "bio docs"]


def test_echoed_instructions_are_stripped() -> None:
    raw = ('1. A user would ask: "How does the photon composing machine set type?"\n'
           "2. The passage answers the question: how are patents searched?\n3. A short keyword\n4. paraphrase:")
    assert parse_queries(raw) == ["How does the photon composing machine set type?", "how are patents searched?"]
