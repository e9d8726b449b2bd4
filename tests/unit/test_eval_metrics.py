"""Metric plumbing on hand-made rankings with hand-computed values (pytrec_eval underneath)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedforge.data.beir import BeirDataset
from embedforge.evaluation.metrics import evaluate_run, metric_names, paired_test, run_from_rankings
from embedforge.evaluation.retrieval_evaluator import RetrievalEvaluator

QRELS = {"q1": {"d1": 1, "d2": 2}, "q2": {"d4": 1}, "q3": {"d9": 1}}
RANKINGS = {"q1": ["d3", "d1", "d2"], "q2": ["d4", "d5"], "q3": ["d5", "d6"]}


def _metrics():
    qids = list(RANKINGS)
    return evaluate_run(QRELS, run_from_rankings(qids, [RANKINGS[q] for q in qids]), hit_ks=(1, 3))


def test_graded_ndcg_matches_hand_computation() -> None:
    m = _metrics()
    # q1: gains 0, 1, 2 at ranks 1..3; ideal 2, 1 → (1/log2 3 + 2/log2 4) / (2 + 1/log2 3)
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3)
    assert m.per_query["q1"]["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert m.per_query["q2"]["ndcg_at_10"] == pytest.approx(1.0)
    assert m.per_query["q3"]["ndcg_at_10"] == 0.0
    assert m.aggregate["ndcg_at_10"] == pytest.approx((dcg / idcg + 1.0) / 3)


def test_rank_metrics_match_hand_computation() -> None:
    m = _metrics()
    assert m.aggregate["mrr_at_10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m.aggregate["p_at_1"] == pytest.approx(1 / 3)
    assert m.per_query["q1"]["p_at_3"] == pytest.approx(2 / 3)
    assert m.aggregate["recall_at_10"] == pytest.approx(2 / 3)
    # AP(q1) = (1/2 + 2/3) / 2
    assert m.per_query["q1"]["map_at_100"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.aggregate["hit_rate_at_1"] == pytest.approx(1 / 3)
    assert m.aggregate["hit_rate_at_3"] == pytest.approx(2 / 3)
    assert list(m.aggregate) == metric_names((1, 3))


def test_mrr_is_cut_at_10() -> None:
    docs = [f"n{i}" for i in range(10)] + ["rel"]
    m = evaluate_run({"q": {"rel": 1}}, run_from_rankings(["q"], [docs]))
    assert m.aggregate["mrr_at_10"] == 0.0
    assert m.aggregate["recall_at_100"] == 1.0


def test_unretrieved_judged_query_counts_as_zero() -> None:
    m = evaluate_run({"a": {"x": 1}, "b": {"y": 1}}, run_from_rankings(["a"], [["x"]]))
    assert m.aggregate["ndcg_at_10"] == pytest.approx(0.5)
    assert m.per_query["b"]["ndcg_at_10"] == 0.0


def test_ranking_order_is_kept_not_resorted_by_doc_id() -> None:
    # trec_eval breaks score ties by doc id; rank-encoded scores keep our order: "a" second must count as rank 2
    m = evaluate_run({"q": {"a": 1}}, run_from_rankings(["q"], [["z", "a"]]))
    assert m.aggregate["mrr_at_10"] == pytest.approx(0.5)


def test_retrieval_evaluator_maps_row_ids_and_drops_padding() -> None:
    ds = BeirDataset("toy", ["d1", "d2", "d3"], ["", "", ""], ["q1", "q2"], ["", ""], {"q1": {"d2": 1}, "q2": {"d3": 1}})
    ev = RetrievalEvaluator(ds)
    ids = np.array([[1, 0], [0, 2]])
    scores = np.array([[2.0, 1.0], [1.0, 0.0]])
    assert ev(ids)["mrr_at_10"] == pytest.approx(0.75)
    assert ev(ids, scores, min_score=0.0)["mrr_at_10"] == pytest.approx(0.5)  # q2's score-0 hit dropped
    assert ev.primary_metric == "ndcg_at_10"
    with pytest.raises(ValueError, match="rankings for 2 queries"):
        ev(ids[:1])


def test_paired_test_detects_a_consistent_gain_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.8, 60))}
    better = {q: v + 0.1 + rng.normal(0, 0.02) for q, v in base.items()}
    noise = {q: v + rng.normal(0, 0.05) for q, v in base.items()}
    strong = paired_test(base, better, n_resamples=2000)
    weak = paired_test(base, noise, n_resamples=2000)
    assert strong["delta"] == pytest.approx(0.1, abs=0.02)
    assert strong["p_value_ttest"] < 1e-6 and strong["p_value_randomization"] < 0.01
    assert weak["p_value_ttest"] > 0.01
    same = paired_test(base, base)
    assert same["p_value_ttest"] == 1.0 and same["delta"] == 0.0
    with pytest.raises(ValueError, match="same queries"):
        paired_test(base, {"q0": 1.0})
