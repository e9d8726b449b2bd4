"""Validation during training: nDCG@10, recall@10 and MRR@10 of the held-out queries at every Matryoshka dimension.

Encodes queries and corpus once per evaluation at full dimension with the model being trained, then truncates
and re-normalizes for each dimension (``truncate_normalize``) and searches with the one search API — one
encoding pass instead of one per dimension as a ``SequentialEvaluator`` of ``InformationRetrievalEvaluator`` s
would need. Scores come from the house metrics (``embedforge.evaluation.metrics``, pytrec_eval). Returns ``{"val_ndcg@10_d384": ..., "val_recall@10_d384": ..., "val_mrr@10_d384": ..., ...}``, plus the teacher-agreement metrics
(``val_teacher_*``, ``val_mean_*``) when the validation set has teacher labels (:mod:`embedforge.training.yardstick`),
and the judged-query metrics (``val_judged_*``) when it has real judged queries: those are searched in the same
corpus and a document ranks at its best chunk (the 100 best chunks are folded to documents). The primary metric
is nDCG@10 of the configured signal at the primary dimension (default: the largest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from embedforge.encoding.encoder import truncate_normalize
from embedforge.evaluation.metrics import evaluate_run, run_from_rankings
from embedforge.search.index import search
from embedforge.training.data import ValidationSet
from embedforge.training.yardstick import add_mean, metric_key

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class MatryoshkaRetrievalEvaluator(BaseEvaluator):
    """nDCG@10 / recall@10 / MRR@10 of a :class:`ValidationSet` at each of ``dims`` (largest first)."""

    judged_depth = 100
    """Chunks retrieved per judged query before they are folded to documents."""

    def __init__(self, val: ValidationSet, dims: list[int], name: str = "val", batch_size: int = 64,
                 primary_dim: int | None = None, signal: str = "synthetic") -> None:
        super().__init__()
        k = 10  # the metrics module reports nDCG and recall at 10
        if not (val.queries or val.judged_queries):
            raise ValueError("the validation set has no queries")
        self.val, self.dims, self.name, self.batch_size, self.k = val, dims, name, batch_size, k
        self.query_ids = list(val.queries)
        self.judged_ids = list(val.judged_queries)
        self.corpus_ids = list(val.corpus)
        if signal in ("teacher", "both") and not val.teacher:
            raise ValueError(f"validation signal {signal!r} needs the teacher's labels of the validation queries")
        if signal in ("synthetic", "both") and not val.queries:
            raise ValueError(f"validation signal {signal!r} needs held-out generated queries")
        if signal == "judged" and not val.judged:
            raise ValueError("validation signal 'judged' needs judged queries (train.judged_queries)")
        self.primary_metric = metric_key(signal, primary_dim or dims[0])
        self.history: list[dict[str, float]] = []

    def metrics_for(self, query_vectors: np.ndarray | None, corpus_vectors: np.ndarray,
                    judged_vectors: np.ndarray | None = None) -> dict[str, float]:
        """Metrics from full-dimension vectors (also used by adapter mode on its own vectors)."""
        signals = {"synthetic": {q: dict.fromkeys(self.val.relevant[q], 1) for q in self.query_ids}}
        if self.val.teacher:
            signals["teacher"] = {q: self.val.teacher[q] for q in self.query_ids if self.val.teacher.get(q)}
        out: dict[str, float] = {}
        for dim in self.dims:
            corpus = truncate_normalize(corpus_vectors, dim)
            if self.query_ids:
                _, ids = search(truncate_normalize(query_vectors, dim), corpus, self.k)
                run = run_from_rankings(self.query_ids, [[self.corpus_ids[i] for i in row if i >= 0] for row in ids])
                for signal, qrels in signals.items():
                    record(out, signal, dim, qrels, {q: r for q, r in run.items() if q in qrels})
            if self.judged_ids and judged_vectors is not None:
                depth = min(self.judged_depth, len(self.corpus_ids))
                _, ids = search(truncate_normalize(judged_vectors, dim), corpus, depth)
                docs = [[self.val.chunk_docs[self.corpus_ids[i]] for i in row if i >= 0] for row in ids]
                record(out, "judged", dim, self.val.judged, run_from_rankings(self.judged_ids, docs))
        return add_mean(out, self.dims)

    def texts(self) -> tuple[list[str], list[str], list[str]]:
        """What a model encodes for :meth:`metrics_for`: the held-out queries, the corpus, the judged queries."""
        return ([self.val.queries[q] for q in self.query_ids], [self.val.corpus[c] for c in self.corpus_ids],
                [self.val.judged_queries[q] for q in self.judged_ids])

    def __call__(self, model: SentenceTransformer, output_path: str | None = None, epoch: float = -1,
                 steps: int = -1) -> dict[str, float]:
        def encode(texts: list[str]) -> np.ndarray | None:
            if not texts:
                return None
            vectors = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            return np.asarray(vectors, dtype=np.float32)

        metrics = self.metrics_for(*(encode(t) for t in self.texts()))
        self.history.append({"epoch": float(epoch), "step": float(steps), **metrics})
        return metrics


def record(out: dict[str, float], signal: str, dim: int, qrels: dict[str, dict[str, int]], run: dict) -> None:
    """nDCG@10, recall@10 and MRR@10 of ``run`` against ``qrels`` into ``out`` under ``signal``'s metric names."""
    m = evaluate_run(qrels, run).aggregate
    out[metric_key(signal, dim)] = m["ndcg_at_10"]
    out[metric_key(signal, dim, "recall@10")] = m["recall_at_10"]
    out[metric_key(signal, dim, "mrr@10")] = m["mrr_at_10"]
