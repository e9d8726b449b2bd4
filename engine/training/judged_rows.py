"""Training rows from real queries with human judgements (``train.judged_train_split``).

A user who has judged queries for their corpus (a BEIR ``qrels/<split>.tsv``) can train on them as well as on
the synthetic queries: each (query, document) pair judged relevant (grade > 0) becomes one row whose positive is
the document's chunk the start model ranks highest for the query (a long document is several chunks; the query
is usually about one of them). When the other rows carry hard negatives, a judged row gets its own from the
start model's ranking of every chunk: the highest-ranked chunks of documents not judged relevant to the query,
leaving out any that score within ``relative_margin`` of the positive (the mine stage's false-negative rule).

Queries used here must be kept apart from those that choose the checkpoint (``judged_split``) and from those
the job is evaluated on; the config and the preflight check refuse overlaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embedforge.search.index import search

CANDIDATES = 1000
"""Chunks ranked per judged query when hard negatives are needed. Deep on purpose: a judged positive is often
not the start model's first choice, and every chunk ranked above it within the margin is passed over (with 50
candidates, 267 of 563 Cranfield pairs found no negative below the margin)."""


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
    chunk_ids = sorted(passages)
    need = sorted({cid for _, _, doc in pairs for cid in doc_chunks[doc]}) if not n_negatives else chunk_ids
    vectors = encode([passages[c] for c in need])
    vec = {cid: vectors[i] for i, cid in enumerate(need)}
    texts = sorted({text for _, text, _ in pairs})
    qvec = dict(zip(texts, encode(texts), strict=True))
    ranked = None
    if n_negatives:
        k = min(CANDIDATES + n_negatives, len(chunk_ids))
        scores, ids = search(np.stack([qvec[t] for t in texts]), vectors, k)
        ranked = {t: (ids[i], scores[i]) for i, t in enumerate(texts)}
    rows = []
    for qid, text, doc in pairs:
        own = doc_chunks[doc]
        pos_scores = [float(vec[c] @ qvec[text]) for c in own]
        best = int(np.argmax(pos_scores))
        row = {"query_id": qid, "anchor": text, "positive": passages[own[best]], "negatives": []}
        if ranked is not None:
            relevant = {d for d, g in qrels[qid].items() if g > 0}
            ceiling = pos_scores[best] * (1 - relative_margin)
            for i, s in zip(*ranked[text], strict=True):
                if i < 0:
                    continue
                cid = chunk_ids[int(i)]
                if chunk_docs.get(cid) in relevant or float(s) > ceiling:
                    continue
                row["negatives"].append(passages[cid])
                if len(row["negatives"]) == n_negatives:
                    break
            if len(row["negatives"]) < n_negatives:
                quarantine.append({"source": "judged", "query_id": qid,
                                   "reason": f"only {len(row['negatives'])} hard negatives, {n_negatives} needed"})
                continue
        rows.append(row)
    return rows, quarantine
