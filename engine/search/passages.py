"""Documents scored by their best passage (MaxP, Dai & Callan 2019): ranked passage hits → ranked document hits.

A model reads only the first ``max_seq_length`` tokens of a document (256 for MiniLM), so one vector per document
never sees the rest of a long one. Splitting each document into passages that fit, searching the passages and
scoring each document by its best passage lets every part of it be found.

The document ranking is exact, not an approximation: a document's score is its best passage's score, so the
top ``k`` documents are the first ``k`` distinct owners in the passage ranking. Fetching
``k × (most passages of any document)`` passages guarantees ``k`` distinct owners (:func:`passages_to_fetch`).

>>> owner = np.array([0, 0, 1, 2])            # passage row → document row
>>> best_passage(np.array([[0.9, 0.8, 0.5]]), np.array([[1, 0, 3]]), owner, 2)
(array([[0.9, 0.5]], dtype=float32), array([[0, 2]]))
"""

from __future__ import annotations

import numpy as np


def passages_to_fetch(owner: np.ndarray, k: int) -> int:
    """Passages to fetch per query so that the top ``k`` documents are exact (at most every passage)."""
    per_doc = int(np.bincount(owner).max()) if len(owner) else 1
    return min(len(owner), k * per_doc)


def best_passage(scores: np.ndarray, ids: np.ndarray, owner: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of passage hits (best first, ``-1`` for none) → the top ``k`` documents, each scored by its
    best passage; rows padded with ``-1`` ids (score ``-inf``) when fewer documents were hit."""
    out_scores, rows = best_passage_rows(scores, ids, owner, k)
    return out_scores, np.where(rows >= 0, owner[np.maximum(rows, 0)], -1)


def best_passage_rows(scores: np.ndarray, ids: np.ndarray, owner: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`best_passage`, but each document is given by its best passage (the passage row), to show it."""
    out_ids = np.full((len(ids), k), -1, dtype=np.int64)
    out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for row, (s, i) in enumerate(zip(scores, ids, strict=True)):
        hit = i >= 0
        passages = np.asarray(i[hit], dtype=np.int64)
        _, first = np.unique(owner[passages], return_index=True)
        first = np.sort(first)[:k]  # the first time each document appears is its best passage
        out_ids[row, :len(first)] = passages[first]
        out_scores[row, :len(first)] = s[hit][first]
    return out_scores, out_ids
