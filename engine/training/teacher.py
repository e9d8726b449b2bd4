"""Teachers for GPL-style pseudo-labelling: rank the corpus for each training query and score the candidates.

A teacher ranks every passage of the corpus for a query and gives each of its top ``depth`` a score:

- ``hybrid``: BM25 (:class:`~embedforge.search.bm25.BM25Retriever`) and the start (dense) model, each searching
  the whole corpus for its top ``depth``, fused by z-scores (:func:`~embedforge.search.fusion.zscore_fusion`, the
  fusion the evaluate stage uses): the score of (q, d) is the fused z-score, a candidate missing from one list
  getting that list's lowest z. No GPU needed; on SciFact the fused ranking beats the dense model alone
  (0.7203 vs 0.6451 nDCG@10), so there is something to learn from it.
- ``cross_encoder``: a sentence-transformers ``CrossEncoder`` (local directory, cache or hub id) re-scores the
  hybrid top ``depth``; the score is its logit.
- ``dense``: another bi-encoder searches the corpus; the score is its cosine similarity.

:func:`pick` turns one query's ranking into a training row: negatives are the candidates ranked *after* the
positive, skipping other chunks of the positive's document and any candidate the teacher scores within
``false_negative_margin`` of the positive (a near-tie is not a negative); a query whose own passage the teacher
does not rank within ``query_filter_rank`` is dropped (a stronger round-trip filter than the student's own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("embedforge.train")


class Teacher(Protocol):
    """Ranks the corpus it was built on: ``rank(queries, k)`` → ``(scores (q, k), ids (q, k))``, -1 pads."""

    name: str

    def rank(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


class HybridTeacher:
    """BM25 + a dense encoder over the whole corpus, fused by z-scores (see the module docstring)."""

    name = "hybrid"

    def __init__(self, corpus: Sequence[str], encoder: Any, depth: int = 100) -> None:
        from embedforge.search.bm25 import BM25Retriever

        self.encoder, self.depth = encoder, depth
        self.bm25 = BM25Retriever(corpus, stemmer=None)  # unstemmed: the teacher the adaptation study measured
        self.corpus_vectors = encoder.encode(list(corpus), cache=True)

    def rank(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        from embedforge.search.fusion import zscore_fusion
        from embedforge.search.index import search

        lexical = self.bm25.search(queries, self.depth)
        dense = search(self.encoder.encode(list(queries)), self.corpus_vectors, min(self.depth, len(self.corpus_vectors)))
        return zscore_fusion([dense, lexical], k)


class CrossEncoderTeacher:
    """A CrossEncoder re-scoring the hybrid teacher's top ``depth`` candidates."""

    name = "cross_encoder"

    def __init__(self, corpus: Sequence[str], first_stage: HybridTeacher, model: str, device: str,
                 batch_size: int = 64) -> None:
        from sentence_transformers import CrossEncoder

        self.corpus, self.first_stage, self.batch_size = list(corpus), first_stage, batch_size
        self.model = CrossEncoder(model, device=device)

    def rank(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        _, cand = self.first_stage.rank(queries, self.first_stage.depth)
        pairs = [(q, self.corpus[i]) for q, row in zip(queries, cand, strict=True) for i in row if i >= 0]
        flat = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False),
                          dtype=np.float32)
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        scores[cand >= 0] = flat
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(cand, order, axis=1)
        return np.take_along_axis(scores, order, axis=1), np.where(ids >= 0, ids, -1)


class DenseTeacher:
    """Another bi-encoder searching the whole corpus (cosine scores)."""

    name = "dense"

    def __init__(self, corpus: Sequence[str], encoder: Any) -> None:
        self.encoder = encoder
        self.corpus_vectors = encoder.encode(list(corpus), cache=True)

    def rank(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        from embedforge.search.index import search

        return search(self.encoder.encode(list(queries)), self.corpus_vectors, min(k, len(self.corpus_vectors)))


def build_teacher(kind: str, corpus: Sequence[str], *, start_model: str, teacher_model: str | None, device: str,
                  depth: int) -> Teacher:
    """The teacher ``kind`` over ``corpus`` (``teacher_model``: the cross-encoder or the other bi-encoder)."""
    from embedforge.encoding.encoder import get_encoder

    if kind in ("cross_encoder", "dense") and not teacher_model:
        raise ValueError(f"train.teacher_model: teacher '{kind}' needs a model (a local directory, cache or hub id)")
    if kind == "dense":
        return DenseTeacher(corpus, get_encoder(teacher_model, device=device))
    hybrid = HybridTeacher(corpus, get_encoder(start_model, device=device), depth=depth)
    if kind == "hybrid":
        return hybrid
    if kind == "cross_encoder":
        from embedforge.models import resolve_model

        try:  # a packaged name or local directory; else let sentence-transformers find it (cache, hub)
            teacher_model = str(resolve_model(teacher_model))
        except Exception:  # noqa: BLE001 - CrossEncoder reports what it cannot load
            pass
        return CrossEncoderTeacher(corpus, hybrid, teacher_model, device=device)
    raise ValueError(f"train.teacher: unknown teacher {kind!r} (hybrid | cross_encoder | dense)")


# ---------------------------------------------------------------- labelling


@dataclass
class Pick:
    """One query's teacher-labelled row, or why it was dropped."""

    pos_score: float | None = None
    negatives: list[tuple[str, float]] = field(default_factory=list)
    positive_rank: int | None = None
    """1-based rank of the positive in the teacher's list (None: outside it)."""
    dropped: str = ""


def pick(ranked: Sequence[tuple[str, float]], positive: str, *, num_negatives: int, false_negative_margin: float,
         query_filter_rank: int, same_doc: Callable[[str, str], bool] = lambda a, b: False) -> Pick:
    """Negatives and scores for one query from the teacher's ``ranked`` ``(id, score)`` list (best first).

    >>> pick([("a", 3.0), ("p", 2.9), ("b", 2.6), ("c", 0.5)], "p", num_negatives=1, false_negative_margin=0.5,
    ...      query_filter_rank=3).negatives
    [('c', 0.5)]
    """
    ids = [cid for cid, _ in ranked]
    rank = ids.index(positive) + 1 if positive in ids else None
    if query_filter_rank and (rank is None or rank > query_filter_rank):
        where = f"at rank {rank}" if rank else f"outside its top {len(ids)}"
        return Pick(positive_rank=rank, dropped=f"the teacher ranks the query's own passage {where} "
                                                f"(query_filter_rank {query_filter_rank})")
    # a positive outside the list (filter off) is taken as relevant: it scores like the teacher's best candidate
    pos_score = ranked[rank - 1][1] if rank else (ranked[0][1] if ranked else 0.0)
    after = ranked[rank:] if rank else ranked
    negatives = [(cid, s) for cid, s in after
                 if cid != positive and not same_doc(cid, positive) and s < pos_score - false_negative_margin]
    negatives = negatives[:num_negatives]
    if len(negatives) < num_negatives:
        return Pick(pos_score, negatives, rank, f"only {len(negatives)} teacher negatives below the positive's "
                                                f"score minus the margin, {num_negatives} needed")
    return Pick(pos_score, negatives, rank)


@dataclass
class Labels:
    """Teacher-labelled TRIPLES rows and the dropped queries with their reasons."""

    triples: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    positive_ranks: list[int | None]


def label_queries(teacher: Teacher, queries: list[dict[str, Any]], corpus_ids: list[str], passages: dict[str, str],
                  *, num_negatives: int, false_negative_margin: float, query_filter_rank: int, depth: int,
                  same_doc: Callable[[str, str], bool], batch: int = 256) -> Labels:
    """TRIPLES rows (``pos_score``/``neg_scores`` = teacher scores) for ``queries`` (``query_id``, ``query``,
    ``chunk_id``); the teacher's ids index ``corpus_ids``."""
    out = Labels([], [], [])
    for start in range(0, len(queries), batch):
        part = queries[start:start + batch]
        scores, ids = teacher.rank([q["query"] for q in part], depth)
        for q, srow, irow in zip(part, scores, ids, strict=True):
            ranked = [(corpus_ids[i], float(s)) for s, i in zip(srow, irow, strict=True) if i >= 0]
            p = pick(ranked, q["chunk_id"], num_negatives=num_negatives, false_negative_margin=false_negative_margin,
                     query_filter_rank=query_filter_rank, same_doc=same_doc)
            out.positive_ranks.append(p.positive_rank)
            if p.dropped:
                out.dropped.append({"source": "teacher", "query_id": q["query_id"], "reason": p.dropped})
                continue
            out.triples.append({
                "query_id": q["query_id"], "query": q["query"], "pos_chunk_id": q["chunk_id"],
                "positive": passages[q["chunk_id"]], "neg_chunk_ids": [c for c, _ in p.negatives],
                "negatives": [passages[c] for c, _ in p.negatives], "pos_score": p.pos_score,
                "neg_scores": [s for _, s in p.negatives]})
    return out


def auto_temperature(triples: list[dict[str, Any]], encode: Callable[[list[str]], np.ndarray], scale: float) -> float:
    """Teacher temperature that puts the teacher's margins on the student's scale: median teacher margin
    (``pos_score - neg_scores[0]``) over the median ``scale · (cos(q, pos) - cos(q, neg_1))`` of the start model
    (``encode`` returns normalized vectors). Falls back to 1 when the student's median margin is not positive."""
    if not triples:
        return 1.0
    teacher = np.median([t["pos_score"] - t["neg_scores"][0] for t in triples])
    q = encode([t["query"] for t in triples])
    p = encode([t["positive"] for t in triples])
    n = encode([t["negatives"][0] for t in triples])
    student = float(np.median(scale * ((q * p).sum(axis=1) - (q * n).sum(axis=1))))
    if student <= 0 or teacher <= 0:
        log.warning("train: teacher_temperature auto: median margins teacher %.3f, student %.3f — using 1.0",
                    teacher, student)
        return 1.0
    return float(teacher / student)
