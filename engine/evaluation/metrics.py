"""Retrieval metrics from pytrec_eval (trec_eval's C code), and paired significance tests from scipy.

Metric names are the keys of ``results.json``: ``ndcg_at_10``, ``mrr_at_10``, ``recall_at_10``,
``recall_at_100``, ``p_at_1``, ``p_at_3``, ``map_at_100`` and ``hit_rate_at_k`` for each cut-off in ``hit_ks``.

trec_eval re-sorts a run by score and breaks ties by document id, which would reorder tied results (binary
Hamming scores tie often). :func:`run_from_rankings` therefore gives each result a score from its rank, so the
ranking evaluated is exactly the ranking retrieved. Every judged query counts: a query with no results scores 0
(pytrec_eval alone would silently leave it out of the average).

Significance stays on scipy, not ranx's ``compare``: ranx's paired t-test is scipy's ``ttest_rel`` too, and its
Fisher randomization test is a numba loop of its own (1,000 permutations, a fixed seed) whose p-values would
differ from the ``scipy.stats.permutation_test`` ones here only by sampling; adopting it would add ranx and its
dependencies (ir_datasets, fastparquet, seaborn, ...) for no new test. TREC run files for ranx/trec_eval are
written by :mod:`embedforge.evaluation.report`.

>>> qrels = {"q1": {"d1": 1, "d2": 2}}
>>> m = evaluate_run(qrels, run_from_rankings(["q1"], [["d3", "d1", "d2"]]))
>>> round(m.aggregate["ndcg_at_10"], 4), m.aggregate["mrr_at_10"]
(0.6199, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Run = dict[str, dict[str, float]]

PRIMARY_METRIC = "ndcg_at_10"
"""The metric every evaluator reports first and plots use."""

_TREC_NAMES: dict[str, str] = {
    "ndcg_cut_10": "ndcg_at_10",
    "recall_10": "recall_at_10",
    "recall_100": "recall_at_100",
    "P_1": "p_at_1",
    "P_3": "p_at_3",
    "map_cut_100": "map_at_100",
}


@dataclass
class RunMetrics:
    """Mean metrics over all judged queries and the per-query values they average."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    @property
    def primary(self) -> float:
        return self.aggregate[PRIMARY_METRIC]


def run_from_rankings(query_ids: Sequence[str], rankings: Sequence[Sequence[str]]) -> Run:
    """Ranked document ids per query → a pytrec_eval run whose scores encode the rank (first = highest)."""
    if len(query_ids) != len(rankings):
        raise ValueError(f"{len(query_ids)} query ids but {len(rankings)} rankings")
    run: Run = {}
    for qid, docs in zip(query_ids, rankings, strict=True):
        n = len(docs)
        scores: dict[str, float] = {}
        for rank, doc in enumerate(docs):
            scores.setdefault(str(doc), float(n - rank))  # a duplicate keeps its best rank
        run[str(qid)] = scores
    return run


def metric_names(hit_ks: Sequence[int] = (1, 3, 10)) -> list[str]:
    """Names of the metrics :func:`evaluate_run` returns, in report order."""
    return ["ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100", "p_at_1", "p_at_3", "map_at_100",
            *[f"hit_rate_at_{k}" for k in hit_ks]]


def evaluate_run(qrels: Qrels, run: Run, hit_ks: Sequence[int] = (1, 3, 10)) -> RunMetrics:
    """Score ``run`` against graded ``qrels`` with pytrec_eval; averages are over every query in ``qrels``."""
    import pytrec_eval

    qrels = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    hit_spec = ",".join(str(k) for k in sorted(set(hit_ks)))
    full = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.10", "recall.10,100", "P.1,3", "map_cut.100", f"success.{hit_spec}"})
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    judged_run = {q: run[q] for q in qrels if run.get(q)}
    cut_run = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in judged_run.items()}
    scored = full.evaluate(judged_run)
    rr = top10.evaluate(cut_run)
    names = metric_names(hit_ks)
    per_query: dict[str, dict[str, float]] = {}
    for qid in qrels:
        if qid not in scored:
            per_query[qid] = dict.fromkeys(names, 0.0)
            continue
        values = {ours: float(scored[qid][trec]) for trec, ours in _TREC_NAMES.items()}
        values["mrr_at_10"] = float(rr[qid]["recip_rank"])
        for k in hit_ks:
            values[f"hit_rate_at_{k}"] = float(scored[qid][f"success_{k}"])
        per_query[qid] = {name: values[name] for name in names}
    aggregate = {name: float(np.mean([pq[name] for pq in per_query.values()])) for name in names}
    return RunMetrics(aggregate, per_query)


def paired_test(reference: Mapping[str, float], candidate: Mapping[str, float], *, n_resamples: int = 10000,
                seed: int = 0) -> dict[str, float]:
    """Paired significance of ``candidate`` vs ``reference`` per-query scores (same queries).

    Returns the means, their difference, the paired t-test p-value and a two-sided paired randomization
    (sign-flip permutation) test p-value, both from scipy.
    """
    from scipy import stats

    missing = set(reference) ^ set(candidate)
    if missing:
        raise ValueError(f"paired test needs the same queries on both sides ({len(missing)} differ)")
    qids = sorted(reference)
    a = np.array([reference[q] for q in qids], dtype=np.float64)
    b = np.array([candidate[q] for q in qids], dtype=np.float64)
    diff = b - a
    out = {"n_queries": float(len(qids)), "mean_reference": float(a.mean()) if len(a) else 0.0,
           "mean_candidate": float(b.mean()) if len(b) else 0.0, "delta": float(diff.mean()) if len(a) else 0.0}
    if len(qids) < 2 or not np.any(diff):
        out.update(t_statistic=0.0, p_value_ttest=1.0, p_value_randomization=1.0)
        return out
    t = stats.ttest_rel(b, a)
    perm = stats.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=n_resamples,
                                  alternative="two-sided", random_state=np.random.default_rng(seed))
    out.update(t_statistic=float(t.statistic), p_value_ttest=float(t.pvalue),
               p_value_randomization=float(perm.pvalue))
    return out
