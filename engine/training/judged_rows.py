"""Training rows from real queries with human judgements (``train.judged_train_split``).

A user who has judged queries for their corpus (a BEIR ``qrels/<split>.tsv``) can train on them as well as on
the synthetic queries: each (query, document) pair judged relevant (grade > 0) becomes one row whose positive is
the document's chunk the start model ranks highest for the query (a long document is several chunks; the query
is usually about one of them). When the other rows carry hard negatives, a judged row gets its own from the
start model's ranking of every chunk, selected by the mine stage's rules (``embedforge.mining.negatives``): no chunk
of a document judged relevant to the query, no copy of a positive's text, none scoring above ``1 -
relative_margin`` of the row's positive score.

Queries used here must be kept apart from those that choose the checkpoint (``judged_split``) and from those
the job is evaluated on; the config and the preflight check refuse overlaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embedforge.mining.corpus import normalize_text, stable_keys
from embedforge.mining.negatives import CorpusKeys, NegativeRules, mine_block
from embedforge.search.index import build_index

CANDIDATES = 1000
"""Chunks ranked per judged query when hard negatives are needed. Deep on purpose: a judged positive is often
not the start model's first choice, and every chunk ranked above it within the margin is passed over (with 50
candidates, 267 of 563 Cranfield pairs found no negative below the margin)."""


def judged_repeat(setting: int | str, synthetic_rows: int, judged: int) -> int:
    """How many times each judged row is used (``train.judged_train_repeat``): a number as given; ``balance`` as
    many times as makes the judged rows about as many as the synthetic ones (1 to 100; once without synthetic
    rows)."""
    if setting != "balance":
        return int(setting)
    return min(100, max(1, round(synthetic_rows / max(judged, 1))))


def judged_rows(queries: dict[str, str], qrels: dict[str, dict[str, int]], passages: dict[str, str],
                chunk_docs: dict[str, str], encode: Callable[[list[str]], np.ndarray], n_negatives: int = 0,
                relative_margin: float = 0.05) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows ``{query_id, anchor, positive, negatives}``, quarantine rows with a reason).

    ``encode`` maps texts to L2-normalized vectors (the start model). A judged document that is not among the
    chunks, or a query with no text, is quarantined with the reason; so is a row that cannot get
    ``n_negatives`` hard negatives.
    """
    doc_chunks: dict[str, list[str]] = {}
    for cid, doc in chunk_docs.items():
        if cid in passages:
            doc_chunks.setdefault(doc, []).append(cid)
    pairs, quarantine = [], []
    for qid, docs in qrels.items():
        text = (queries.get(qid) or "").strip()
        if not text:
            quarantine.append({"source": "judged", "query_id": qid, "reason": "empty query"})
            continue
        for doc, grade in docs.items():
            if grade <= 0:
                continue
            if doc not in doc_chunks:
                quarantine.append({"source": "judged", "query_id": qid,
                                   "reason": f"judged document {doc!r} is not among the job's chunks"})
                continue
            pairs.append((qid, text, doc))
    if not pairs:
        return [], quarantine
    qids = sorted({qid for qid, _, _ in pairs})
    text_of = {qid: text for qid, text, _ in pairs}
    qvec = dict(zip(qids, encode([text_of[q] for q in qids]), strict=True))
    chunk_ids = sorted({cid for _, _, doc in pairs for cid in doc_chunks[doc]}) if not n_negatives \
        else sorted(passages)
    vectors = encode([passages[c] for c in chunk_ids])
    row_of = {cid: i for i, cid in enumerate(chunk_ids)}
    best = {}  # (query, document) → corpus row of the document's chunk the start model ranks highest
    for qid, _, doc in pairs:
        own = [row_of[c] for c in doc_chunks[doc]]
        best[qid, doc] = own[int(np.argmax(vectors[own] @ qvec[qid]))]
    negatives: dict[tuple[str, str], list[str]] = {pair: [] for pair in best}
    if n_negatives:
        negatives = _negatives(qids, qvec, best, chunk_ids, vectors, passages, chunk_docs, n_negatives,
                               relative_margin)
    rows = []
    for qid, text, doc in pairs:
        if len(negatives[qid, doc]) < n_negatives:
            quarantine.append({"source": "judged", "query_id": qid, "document": doc,
                               "reason": f"only {len(negatives[qid, doc])} hard negatives, {n_negatives} needed"})
            continue
        rows.append({"query_id": qid, "anchor": text, "positive": passages[chunk_ids[best[qid, doc]]],
                     "negatives": negatives[qid, doc]})
    return rows, quarantine


def _negatives(qids: list[str], qvec: dict[str, np.ndarray], best: dict[tuple[str, str], int], chunk_ids: list[str],
               vectors: np.ndarray, passages: dict[str, str], chunk_docs: dict[str, str], n_negatives: int,
               relative_margin: float) -> dict[tuple[str, str], list[str]]:
    """Each (query, document) row's hard negatives by the mine stage's rules (``embedforge.mining.negatives``):
    every positive of the query (the best chunk of each relevant document) and every chunk of their documents are
    left out, then chunks whose text equals a positive's or a better candidate's, then those above the relative
    margin of the row's own positive (against the query's lowest positive, a query with many relevant documents
    of mixed scores would keep no candidate for any of its rows)."""
    keys = CorpusKeys(doc_codes=stable_keys(chunk_docs.get(c, c) for c in chunk_ids),
                      text_hashes=stable_keys(normalize_text(passages[c]) for c in chunk_ids))
    per_query: dict[str, list[int]] = {qid: [] for qid in qids}
    for (qid, _), row in best.items():
        per_query[qid].append(row)
    pairs = sorted(best)
    width = max(len(r) for r in per_query.values())
    positive_ids = np.full((len(pairs), width), -1, dtype=np.int64)
    for i, (qid, _) in enumerate(pairs):
        positive_ids[i, :len(per_query[qid])] = per_query[qid]
    margin_to = np.array([per_query[qid].index(best[qid, doc]) for qid, doc in pairs])
    rules = NegativeRules(num_negatives=n_negatives, range_max=max(CANDIDATES, n_negatives),
                          relative_margin=relative_margin)
    selection = mine_block(build_index(vectors), np.stack([qvec[q] for q, _ in pairs]), positive_ids,
                           stable_keys(f"{q}\t{d}" for q, d in pairs), keys, rules, margin_to=margin_to)
    return {pair: [passages[chunk_ids[int(r)]] for r in selection.ids[i] if r >= 0] for i, pair in enumerate(pairs)}
