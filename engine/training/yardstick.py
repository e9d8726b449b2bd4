"""Validation signals for a corpus without labels: what the guard and the best-checkpoint choice measure.

- ``synthetic``: held-out synthetic queries; the passage a query was generated from is its one relevant passage
  (binary nDCG@10, metric ``val_ndcg@10_d<dim>``). It can rise while real-query quality falls: a model learns to
  find the passage a generator wrote a query from.
- ``teacher``: agreement with the teacher on the same held-out queries. The teacher ranks the whole validation
  corpus; its top 10 become graded pseudo-labels (``gains[r]`` for teacher rank r+1, by default 3 for rank 1,
  2 for ranks 2–3, 1 for ranks 4–10; optionally the query's own passage gets ``positive_gain`` too), and the
  student's nDCG@10 is measured against them (metric ``val_teacher_ndcg@10_d<dim>``).
- ``both``: both are measured; choices use their mean (``val_mean_ndcg@10_d<dim>``).
- ``judged``: real queries with human judgements (``train.judged_queries``), searched in the same corpus, a
  document ranking at its best chunk (``val_judged_ndcg@10_d<dim>``). Not a signal for a corpus without labels:
  the yardstick the others are checked against, and the guard's signal when a user has a few judged queries.

The functions here take plain ids and rankings so a benchmark can correlate a signal with real-query nDCG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedforge.training.data import ValidationSet
    from embedforge.training.teacher import Teacher

SIGNALS = ("synthetic", "teacher", "both", "judged")

SIGNAL_NAMES = {"synthetic": "synthetic-query nDCG@10", "teacher": "teacher-agreement nDCG@10",
                "both": "mean of synthetic-query and teacher-agreement nDCG@10", "judged": "judged-query nDCG@10"}
"""Plain-words name of each signal (log lines, model card)."""

DEFAULT_GAINS = (3, 2, 2, 1, 1, 1, 1, 1, 1, 1)
"""Gain of the teacher's rank 1, 2, … 10."""

PREFIX = {"synthetic": "val", "teacher": "val_teacher", "both": "val_mean", "judged": "val_judged"}


def metric_key(signal: str, dim: int, metric: str = "ndcg@10") -> str:
    """The evaluator's metric name of ``signal`` at ``dim`` (e.g. ``val_teacher_ndcg@10_d384``)."""
    return f"{PREFIX[signal]}_{metric}_d{dim}"


def teacher_qrels(query_ids: Sequence[str], teacher_rankings: Sequence[Sequence[str]],
                  positives: dict[str, set[str]] | None = None, gains: Sequence[int] = DEFAULT_GAINS,
                  positive_gain: int = 0) -> dict[str, dict[str, int]]:
    """Graded pseudo-qrels: ``gains[r]`` for the teacher's rank r+1 (its first ``len(gains)`` ids), and at least
    ``positive_gain`` for the query's own passage(s) in ``positives``.

    >>> teacher_qrels(["q"], [["a", "b", "c"]], {"q": {"z"}}, gains=[3, 1], positive_gain=2)
    {'q': {'a': 3, 'b': 1, 'z': 2}}
    """
    qrels: dict[str, dict[str, int]] = {}
    for qid, ranking in zip(query_ids, teacher_rankings, strict=True):
        labels = {cid: int(g) for cid, g in zip(ranking, gains, strict=False) if g > 0}
        if positive_gain and positives:
            for cid in positives.get(qid, ()):
                labels[cid] = max(labels.get(cid, 0), positive_gain)
        qrels[qid] = labels
    return qrels


def teacher_validation_labels(teacher: Teacher, val: ValidationSet, teacher_corpus_ids: list[str], *,
                              gains: Sequence[int] = DEFAULT_GAINS, positive_gain: int = 0,
                              depth: int = 100) -> dict[str, dict[str, int]]:
    """Graded pseudo-qrels of the validation queries: the teacher (built over ``teacher_corpus_ids``) ranks them,
    its top ``len(gains)`` among the validation corpus get the gains."""
    query_ids = list(val.queries)
    _, ids = teacher.rank([val.queries[q] for q in query_ids], depth)
    allowed = set(val.corpus)
    rankings = [[teacher_corpus_ids[i] for i in row if i >= 0 and teacher_corpus_ids[i] in allowed][:len(gains)]
                for row in ids]
    return teacher_qrels(query_ids, rankings, val.relevant, gains, positive_gain)


def add_mean(metrics: dict[str, float], dims: Sequence[int]) -> dict[str, float]:
    """``val_mean_*`` = the mean of the synthetic and teacher metrics at each dim (when both are present)."""
    for d in dims:
        for m in ("ndcg@10", "recall@10"):
            a, b = metrics.get(metric_key("synthetic", d, m)), metrics.get(metric_key("teacher", d, m))
            if a is not None and b is not None:
                metrics[metric_key("both", d, m)] = (a + b) / 2
    return metrics
