"""Training rows and the held-out validation set, built from the stage inputs' shards.

Two sources, the first one present wins:

- ``mine`` TRIPLES shards: ``query, positive, negatives[]`` → columns ``anchor, positive, negative_1..k``;
- ``generate`` QUERIES shards joined with ``chunk`` CHUNKS: ``query`` → the passage of its ``chunk_id``.

The validation split is the ``val`` queries of ``generate`` (split by document there); without them, a seeded
fraction of documents is held out here. A validation query's relevant passage is its source chunk; the
validation corpus is every chunk (capped by a seeded sample that always keeps the relevant ones).
Rows that cannot be used (empty text, unknown chunk) are returned with a reason for the quarantine.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.data.schemas import passage_text
from embedforge.data.shards import list_shards, read_table


@dataclass
class TrainingRows:
    """Columns for the trainer (``anchor``, ``positive``, ``negative_1``..) plus provenance."""

    columns: dict[str, list[str]]
    source: str
    """``triples``, ``queries`` or ``teacher``; ``+judged`` when judged queries were added (``judged_rows``)."""
    shards: list[str]
    """Input shard files the rows came from (for the model card's lineage)."""
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.columns["anchor"])

    @property
    def n_negatives(self) -> int:
        return sum(1 for c in self.columns if c.startswith("negative_"))


@dataclass
class ValidationSet:
    """Held-out queries, the corpus they are searched in, and which corpus ids are relevant to each."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]
    teacher: dict[str, dict[str, int]] = field(default_factory=dict)
    """Graded pseudo-labels from the teacher's ranking (``validation: teacher | both``; see ``yardstick``)."""
    judged_queries: dict[str, str] = field(default_factory=dict)
    """Real queries with human judgements (``train.judged_queries``), searched in the same corpus."""
    judged: dict[str, dict[str, int]] = field(default_factory=dict)
    """Their judgements: query id → {document id → grade}."""
    chunk_docs: dict[str, str] = field(default_factory=dict)
    """Document id of each corpus chunk: for the judged queries a document ranks at its best chunk."""

    def __len__(self) -> int:
        return len(self.queries)


def doc_key(chunk_id: str) -> str:
    """The document part of a chunk id (``<doc_version[:16]>-<idx>`` → ``<doc_version[:16]>``)."""
    return chunk_id.rsplit("-", 1)[0]


def held_out(doc: str, fraction: float, seed: int) -> bool:
    """Seeded, order-independent choice of validation documents."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{doc}".encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def load_passages(chunk_dir: Path) -> dict[str, str]:
    """chunk_id → the text it is embedded as (``passage_text(title, text)``)."""
    table = read_table(chunk_dir, columns=["chunk_id", "title", "text"])
    return {cid: passage_text(title, text) for cid, title, text in
            zip(table.column("chunk_id").to_pylist(), table.column("title").to_pylist(),
                table.column("text").to_pylist(), strict=True)}


def load_queries(query_dir: Path) -> list[dict[str, Any]]:
    """QUERIES rows as dicts (``kind``: llm | title | ict | keyword)."""
    return read_table(query_dir, columns=["query_id", "chunk_id", "query", "kind", "split"]).to_pylist()


def select_queries(queries: list[dict[str, Any]], kinds: list[str] | None, ict_keep_sentence: float,
                   seed: int) -> tuple[set[str] | None, set[str]]:
    """(query ids to train on, or None for all; ICT query ids whose sentence is cut out of the positive).

    Inverse cloze (Lee et al. 2019): the positive of a sentence query is its chunk *without* that sentence, except
    for a seeded ``ict_keep_sentence`` share of rows, so the model learns context, not string overlap.
    """
    if kinds is not None and not any(q.get("kind") for q in queries):
        raise ValueError("train.query_kinds needs the generate stage's queries (their kind column) in the job")
    only = None if kinds is None else {q["query_id"] for q in queries if q.get("kind") in set(kinds)}
    strip = {q["query_id"] for q in queries
             if q.get("kind") == "ict" and not held_out(q["query_id"], ict_keep_sentence, seed)}
    return only, strip


def cut_sentence(passage: str, sentence: str) -> str:
    """``passage`` without the first verbatim occurrence of ``sentence`` (unchanged when it does not occur)."""
    sentence = sentence.strip()
    i = passage.find(sentence) if sentence else -1
    if i < 0:
        return passage
    return re.sub(r"[ \t]{2,}", " ", (passage[:i] + passage[i + len(sentence):])).strip()


def split_queries(queries: list[dict[str, Any]], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train ids, val ids): the ``split`` column when it has ``val`` rows, else held-out documents."""
    has_val = any(q["split"] == "val" for q in queries)
    train, val = set(), set()
    for q in queries:
        is_val = q["split"] == "val" if has_val else held_out(doc_key(q["chunk_id"]), val_fraction, seed)
        (val if is_val else train).add(q["query_id"])
    return train, val


def rows_from_queries(queries: list[dict[str, Any]], passages: dict[str, str], train_ids: set[str],
                      shards: list[str], strip_ids: set[str] = frozenset()) -> TrainingRows:
    """(query, source passage) pairs of the training queries (``strip_ids``: cut the query out of the passage)."""
    kept, quarantine = train_queries(queries, passages, train_ids, source="generate")
    anchors = [q["query"] for q in kept]
    positives = [cut_sentence(passages[q["chunk_id"]], q["query"]) if q["query_id"] in strip_ids
                 else passages[q["chunk_id"]] for q in kept]
    return TrainingRows({"anchor": anchors, "positive": positives}, "queries", shards, quarantine)


def train_queries(queries: list[dict[str, Any]], passages: dict[str, str], train_ids: set[str],
                  source: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training queries (``train_ids``) fit to train on, their text stripped, and a quarantine row (tagged
    ``source``) for each of the others with the :func:`query_problem` reason."""
    kept, quarantine = [], []
    for q in queries:
        if q["query_id"] not in train_ids:
            continue
        if reason := query_problem(q["query"], q["chunk_id"], passages):
            quarantine.append({"source": source, "query_id": q["query_id"], "reason": reason})
        else:
            kept.append({**q, "query": q["query"].strip()})
    return kept, quarantine


def rows_from_triples(triple_dir: Path, max_negatives: int, exclude_ids: set[str],
                      exclude_docs: set[str] | None = None, only_ids: set[str] | None = None,
                      strip_ids: set[str] = frozenset()) -> TrainingRows:
    """(query, positive, negative_1..k) rows; rows of validation queries/documents are left out, and rows not in
    ``only_ids`` when it is given; ``strip_ids``: cut the query out of its positive (inverse cloze).

    Every row gets exactly ``k`` negatives so the columns are rectangular: k = ``max_negatives``, lowered to the
    median count when most rows have fewer; rows with fewer than k negatives are quarantined with the reason.
    """
    shards = [str(p) for p in list_shards(triple_dir)]
    table = read_table(triple_dir, columns=["query_id", "query", "pos_chunk_id", "positive", "negatives"])
    rows, quarantine = [], []
    for r in table.to_pylist():
        if r["query_id"] in exclude_ids or (exclude_docs and doc_key(r["pos_chunk_id"]) in exclude_docs):
            continue
        if only_ids is not None and r["query_id"] not in only_ids:
            continue
        if r["query_id"] in strip_ids and r["positive"]:
            r["positive"] = cut_sentence(r["positive"], r["query"] or "")
        if not (r["query"] or "").strip() or not (r["positive"] or "").strip():
            quarantine.append({"source": "mine", "query_id": r["query_id"], "reason": "empty query or positive"})
            continue
        r["negatives"] = [n for n in (r["negatives"] or []) if n and n.strip()]
        rows.append(r)
    k = max_negatives
    with_k = [r for r in rows if len(r["negatives"]) >= k]
    if k and len(with_k) < len(rows) / 2:  # most rows lack k negatives: use what most rows have
        counts = sorted(len(r["negatives"]) for r in rows)
        k = min(max_negatives, counts[len(counts) // 2]) if counts else 0
        with_k = [r for r in rows if len(r["negatives"]) >= k]
    for r in rows:
        if len(r["negatives"]) < k:
            quarantine.append({"source": "mine", "query_id": r["query_id"],
                               "reason": f"only {len(r['negatives'])} hard negatives, {k} needed"})
    columns: dict[str, list[str]] = {"anchor": [r["query"].strip() for r in with_k],
                                     "positive": [r["positive"] for r in with_k]}
    for j in range(k):
        columns[f"negative_{j + 1}"] = [r["negatives"][j] for r in with_k]
    return TrainingRows(columns, "triples", shards, quarantine)


def rows_from_teacher(triples: list[dict[str, Any]], strip_ids: set[str] = frozenset(),
                      temperature: float | None = None) -> TrainingRows:
    """Columns from teacher-labelled TRIPLES rows (all with the same number of negatives); with ``temperature``
    also the distillation ``label`` column ``[pos_score, neg_scores...] / temperature``."""
    k = min((len(t["negatives"]) for t in triples), default=0)
    columns: dict[str, list[Any]] = {
        "anchor": [t["query"] for t in triples],
        "positive": [cut_sentence(t["positive"], t["query"]) if t["query_id"] in strip_ids else t["positive"]
                     for t in triples]}
    for j in range(k):
        columns[f"negative_{j + 1}"] = [t["negatives"][j] for t in triples]
    if temperature is not None:
        columns["label"] = [[t["pos_score"] / temperature, *(s / temperature for s in t["neg_scores"][:k])]
                            for t in triples]
    return TrainingRows(columns, "teacher", [])


def validation_set(queries: list[dict[str, Any]], passages: dict[str, str], val_ids: set[str],
                   corpus_max: int, seed: int) -> ValidationSet:
    """Val queries with their source chunk as the relevant passage, in a (capped) corpus of all chunks."""
    vq = {q["query_id"]: q["query"].strip() for q in queries
          if q["query_id"] in val_ids and not query_problem(q["query"], q["chunk_id"], passages)}
    relevant = {q["query_id"]: {q["chunk_id"]} for q in queries if q["query_id"] in vq}
    needed = set().union(*relevant.values()) if relevant else set()
    others = sorted(set(passages) - needed)
    random.Random(seed).shuffle(others)
    keep = sorted(needed) + others[: max(0, corpus_max - len(needed))]
    return ValidationSet(vq, {cid: passages[cid] for cid in keep}, relevant)


def add_judged(val: ValidationSet, queries: dict[str, str], qrels: dict[str, dict[str, int]],
               passages: dict[str, str], chunk_docs: dict[str, str]) -> int:
    """Adds judged real queries to ``val``: every chunk of a judged document joins its corpus. Judgements of
    documents that are not among the chunks are left out, and so is a query left with none (or with no text).
    Returns the number of queries kept."""
    present = set(chunk_docs.values())
    kept = {}
    for qid, docs in qrels.items():
        docs = {d: g for d, g in docs.items() if d in present}
        if docs and (queries.get(qid) or "").strip():
            kept[qid] = docs
    needed = {d for docs in kept.values() for d in docs}
    for cid, doc in chunk_docs.items():
        if doc in needed and cid not in val.corpus:
            val.corpus[cid] = passages[cid]
    val.judged_queries = {q: queries[q].strip() for q in kept}
    val.judged = kept
    val.chunk_docs = {cid: chunk_docs[cid] for cid in val.corpus}
    return len(kept)


def query_problem(query: str | None, chunk_id: str | None, passages: dict[str, str]) -> str:
    """Why a query cannot be used (empty, unknown chunk), or ``""``."""
    if not (query or "").strip():
        return "empty query"
    if chunk_id not in passages:
        return f"chunk_id {chunk_id!r} is not in the chunk shards"
    return ""
