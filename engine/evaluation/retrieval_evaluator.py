"""The retrieval evaluator: ranked corpus row ids for a dataset's judged queries → ``dict[str, float]``.

Like sentence-transformers' evaluators it names a primary metric (``ndcg_at_10``) and returns plain floats;
per-query values of the last call stay available for significance tests and ``per_query.jsonl``.

>>> ev = RetrievalEvaluator(dataset)
>>> ev(ids)["ndcg_at_10"], ev.primary_metric
(0.645..., 'ndcg_at_10')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedforge.data.beir import BeirDataset
from embedforge.evaluation.metrics import PRIMARY_METRIC, RunMetrics, evaluate_run, run_from_rankings


class RetrievalEvaluator:
    """Scores rankings (row indices into ``dataset.corpus_ids``) of ``dataset``'s queries with pytrec_eval."""

    primary_metric = PRIMARY_METRIC

    def __init__(self, dataset: BeirDataset, hit_ks: Sequence[int] = (1, 3, 10)) -> None:
        self.dataset = dataset
        self.hit_ks = tuple(hit_ks)
        self.last: RunMetrics | None = None

    def __call__(self, ids: np.ndarray, scores: np.ndarray | None = None,
                 min_score: float | None = None) -> dict[str, float]:
        """Metrics of ranked ``ids`` (``(n_queries, k)``, in query order); results scoring ``<= min_score`` drop
        out (BM25 pads queries without a known term with score-0 documents)."""
        if len(ids) != len(self.dataset.query_ids):
            raise ValueError(f"{len(ids)} rankings for {len(self.dataset.query_ids)} queries of {self.dataset.name}")
        corpus_ids = self.dataset.corpus_ids
        rankings = []
        for qi, row in enumerate(ids):
            keep = [i for j, i in enumerate(row) if i >= 0
                    and (min_score is None or scores is None or scores[qi, j] > min_score)]
            rankings.append([corpus_ids[i] for i in keep])
        self.last = evaluate_run(self.dataset.qrels, run_from_rankings(self.dataset.query_ids, rankings), self.hit_ks)
        return dict(self.last.aggregate)

    @property
    def per_query(self) -> dict[str, dict[str, float]]:
        if self.last is None:
            raise RuntimeError("call the evaluator first")
        return self.last.per_query
