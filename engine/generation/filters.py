"""Query filters, each a small function; the stage applies them in order and counts drops per rule.

Order: normalization → length bounds → verbatim copy → exact duplicates → near duplicates (same chunk) →
round-trip consistency (the source chunk must rank in the top k of the corpus, as in Promptagator).

>>> normalize_query("  “What   is   X ?” ")
'What is X?'
>>> longest_common_span("a b c d e", "x b c d y")
3
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedforge.generation.sources import words

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([?.!,;:])")
_WRAP = "\"'`“”‘’«»"


def normalize_query(text: str) -> str:
    """NFKC, collapsed whitespace, no wrapping quotes, no space before punctuation, no trailing commas."""
    text = unicodedata.normalize("NFKC", text or "")
    text = " ".join(text.split())
    while len(text) >= 2 and text[0] in _WRAP and text[-1] in _WRAP:
        text = text[1:-1].strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text.strip(" ,;:-")


def dedup_key(text: str) -> str:
    """Key for exact-duplicate detection: lower-cased words only."""
    return " ".join(words(text))


def length_ok(text: str, min_words: int, max_words: int) -> bool:
    """``min_words ≤ word count ≤ max_words``."""
    return min_words <= len(text.split()) <= max_words


def longest_common_span(query: str, passage: str) -> int:
    """Length in words of the longest run of consecutive words shared by ``query`` and ``passage``."""
    q, p = words(query), words(passage)
    if not q or not p:
        return 0
    best = 0
    prev = [0] * (len(p) + 1)
    for qw in q:
        cur = [0] * (len(p) + 1)
        for j, pw in enumerate(p, 1):
            if qw == pw:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def copies_passage(query: str, passage: str, max_copied_words: int) -> bool:
    """True when the query repeats ``max_copied_words`` or more consecutive words of its passage."""
    return longest_common_span(query, passage) >= max_copied_words


def jaccard(a: str, b: str) -> float:
    """Word-set Jaccard similarity."""
    sa, sb = set(words(a)), set(words(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def near_duplicate_mask(queries: Sequence[str], threshold: float) -> list[bool]:
    """Keep mask: a query is dropped when its Jaccard with an earlier kept query is ≥ ``threshold``."""
    kept: list[str] = []
    mask = []
    for q in queries:
        dup = any(jaccard(q, k) >= threshold for k in kept)
        mask.append(not dup)
        if not dup:
            kept.append(q)
    return mask


def roundtrip_mask(query_vectors: np.ndarray, corpus_vectors: np.ndarray, source_rows: Sequence[int],
                   k: int) -> list[bool]:
    """Keep mask: the query's source chunk (row of ``corpus_vectors``) is within its top-``k`` search results."""
    from embedforge.search.index import search

    if len(source_rows) == 0:
        return []
    _, ids = search(query_vectors, corpus_vectors, k)
    return [int(src) in set(row.tolist()) for src, row in zip(source_rows, ids, strict=True)]


@dataclass
class Candidate:
    """A query before filtering, with the chunk it was made for."""

    chunk_id: str
    doc_id: str
    passage: str
    query: str
    kind: str
    generator: str
    prompt_hash: str


@dataclass
class FilterSettings:
    """Thresholds of the filters (see :class:`embedforge.configs.generate.GenerateConfig`)."""

    min_words: int = 2
    max_words: int = 40
    max_copied_words: int = 10
    copy_exempt_kinds: tuple[str, ...] = ("ict",)
    near_duplicate_jaccard: float = 0.8
    roundtrip_top_k: int = 0
    roundtrip_kinds: tuple[str, ...] = ("llm", "title", "ict", "keyword")


RULES = ("empty", "length", "verbatim_copy", "exact_duplicate", "near_duplicate", "roundtrip")
"""Filter rules in the order they apply (a query is counted under the first rule that drops it)."""


def filter_candidates(candidates: list[Candidate], settings: FilterSettings, seen: set[str],
                      roundtrip: Callable[[list[Candidate]], list[bool]] | None = None
                      ) -> tuple[list[Candidate], dict[str, int]]:
    """Kept candidates (normalized, in order) and drops per rule.

    ``seen`` holds the dedup keys of queries kept earlier (other shards); keys of the queries kept here are
    added to it only after every filter, so a resumed run rebuilds the same ``seen`` from the written shards.
    """
    dropped = dict.fromkeys(RULES, 0)
    stage: list[Candidate] = []
    shard_keys: set[str] = set()
    for c in candidates:
        c.query = normalize_query(c.query)
        key = dedup_key(c.query)
        if not key:
            dropped["empty"] += 1
        elif not length_ok(c.query, settings.min_words, settings.max_words):
            dropped["length"] += 1
        elif c.kind not in settings.copy_exempt_kinds and copies_passage(c.query, c.passage, settings.max_copied_words):
            dropped["verbatim_copy"] += 1
        elif key in seen or key in shard_keys:
            dropped["exact_duplicate"] += 1
        else:
            shard_keys.add(key)
            stage.append(c)
    by_chunk: dict[str, list[int]] = {}
    for i, c in enumerate(stage):
        by_chunk.setdefault(c.chunk_id, []).append(i)
    near_keep = [True] * len(stage)
    for rows in by_chunk.values():
        for i, keep in zip(rows, near_duplicate_mask([stage[i].query for i in rows], settings.near_duplicate_jaccard),
                           strict=True):
            near_keep[i] = keep
    dropped["near_duplicate"] = near_keep.count(False)
    stage = [c for c, keep in zip(stage, near_keep, strict=True) if keep]
    if roundtrip is not None and settings.roundtrip_top_k > 0:
        checked = [i for i, c in enumerate(stage) if c.kind in settings.roundtrip_kinds]
        mask = roundtrip([stage[i] for i in checked]) if checked else []
        drop = {i for i, ok in zip(checked, mask, strict=True) if not ok}
        dropped["roundtrip"] = len(drop)
        stage = [c for i, c in enumerate(stage) if i not in drop]
    seen.update(dedup_key(c.query) for c in stage)
    return stage, dropped
