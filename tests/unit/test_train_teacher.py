"""Teacher labelling on hand-built rankings, the teacher-agreement yardstick, the guard's choice, the distillation
losses and weight averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from embedforge.configs.train import TrainConfig
from embedforge.training.checkpoints import interpolate
from embedforge.training.data import ValidationSet, rows_from_teacher
from embedforge.training.guard import Candidate, choose
from embedforge.training.teacher import label_queries, pick
from embedforge.training.yardstick import add_mean, metric_key, teacher_qrels


def _pick(ranked, positive="p", **kw):
    opts = {"num_negatives": 2, "false_negative_margin": 0.5, "query_filter_rank": 3} | kw
    return pick(ranked, positive, **opts)


def test_negatives_come_after_the_positive_outside_the_margin() -> None:
    ranked = [("a", 5.0), ("p", 4.0), ("b", 3.8), ("c", 3.0), ("d", 2.0), ("e", 1.0)]
    p = _pick(ranked)
    assert p.positive_rank == 2 and p.pos_score == 4.0 and not p.dropped
    # a ranks above the positive, b is within 0.5 of it: neither is a negative
    assert p.negatives == [("c", 3.0), ("d", 2.0)]
    assert _pick(ranked, false_negative_margin=1.5).negatives == [("d", 2.0), ("e", 1.0)]
    assert _pick(ranked, false_negative_margin=0.0).negatives == [("b", 3.8), ("c", 3.0)]


def test_other_chunks_of_the_positives_document_are_not_negatives() -> None:
    ranked = [("doc1-0", 4.0), ("doc1-1", 2.0), ("c", 1.5), ("d", 1.0)]
    p = _pick(ranked, positive="doc1-0", same_doc=lambda a, b: a.split("-")[0] == b.split("-")[0])
    assert p.negatives == [("c", 1.5), ("d", 1.0)]


def test_query_filter_drops_queries_whose_passage_the_teacher_ranks_low() -> None:
    ranked = [("a", 5.0), ("b", 4.0), ("c", 3.0), ("p", 2.0), ("d", 1.0)]
    dropped = _pick(ranked, query_filter_rank=3, num_negatives=1)
    assert dropped.dropped and "rank 4" in dropped.dropped and dropped.positive_rank == 4
    kept = _pick(ranked, query_filter_rank=4, num_negatives=1)
    assert not kept.dropped and kept.negatives == [("d", 1.0)]
    missing = _pick(ranked[:3], query_filter_rank=3)
    assert missing.dropped and "outside its top 3" in missing.dropped
    # filter off: a positive outside the list counts as relevant, scoring like the teacher's best candidate
    off = _pick(ranked[:3], query_filter_rank=0, num_negatives=1)
    assert not off.dropped and off.pos_score == 5.0 and off.negatives == [("b", 4.0)]


def test_too_few_negatives_drops_the_row() -> None:
    p = _pick([("p", 4.0), ("a", 3.9)], num_negatives=1)
    assert p.dropped.startswith("only 0 teacher negatives")


class FixedTeacher:
    """A teacher whose ranking is given by hand (ids index the corpus)."""

    name = "fixed"

    def __init__(self, rankings: dict[str, list[tuple[int, float]]]) -> None:
        self.rankings = rankings

    def rank(self, queries, k):
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for r, q in enumerate(queries):
            for j, (i, s) in enumerate(self.rankings[q][:k]):
                ids[r, j], scores[r, j] = i, s
        return scores, ids


def test_label_queries_writes_teacher_scores_and_counts_drops() -> None:
    corpus_ids = ["c0", "c1", "c2", "c3"]
    passages = {c: f"text of {c}" for c in corpus_ids}
    teacher = FixedTeacher({"q one": [(0, 3.0), (2, 1.0), (3, 0.2)], "q two": [(1, 2.0), (3, 1.9), (2, 0.1), (0, 0.0)]})
    queries = [{"query_id": "1", "query": "q one", "chunk_id": "c0"},
               {"query_id": "2", "query": "q two", "chunk_id": "c2"}]
    labels = label_queries(teacher, queries, corpus_ids, passages, num_negatives=2, false_negative_margin=0.5,
                           query_filter_rank=2, depth=4, same_doc=lambda a, b: False)
    assert [d["query_id"] for d in labels.dropped] == ["2"]  # its passage is at teacher rank 3
    assert labels.positive_ranks == [1, 3]
    (t,) = labels.triples
    assert t["pos_chunk_id"] == "c0" and t["positive"] == "text of c0" and t["pos_score"] == 3.0
    assert t["neg_chunk_ids"] == ["c2", "c3"] and t["negatives"] == ["text of c2", "text of c3"]
    assert t["neg_scores"] == pytest.approx([1.0, 0.2])
    rows = rows_from_teacher(labels.triples, temperature=0.5)
    assert rows.n_negatives == 2 and rows.columns["label"] == [pytest.approx([6.0, 2.0, 0.4])]
    assert "label" not in rows_from_teacher(labels.triples).columns


def test_teacher_qrels_grade_the_teachers_top_ranks() -> None:
    qrels = teacher_qrels(["q1", "q2"], [["a", "b", "c", "d"], ["x"]], {"q1": {"d"}, "q2": {"y"}})
    assert qrels == {"q1": {"a": 3, "b": 2, "c": 2, "d": 1}, "q2": {"x": 3}}
    with_pos = teacher_qrels(["q1"], [["a", "b"]], {"q1": {"b"}}, positive_gain=3)
    assert with_pos == {"q1": {"a": 3, "b": 3}}
    m = add_mean({metric_key("synthetic", 8): 0.2, metric_key("teacher", 8): 0.6}, [8])
    assert m["val_mean_ndcg@10_d8"] == pytest.approx(0.4)


def test_evaluator_measures_agreement_with_the_teacher() -> None:
    from embedforge.training.matryoshka_evaluator import MatryoshkaRetrievalEvaluator

    corpus = {f"c{i}": f"p{i}" for i in range(12)}
    val = ValidationSet({"q": "query"}, corpus, {"q": {"c0"}})
    val.teacher = teacher_qrels(["q"], [[f"c{i}" for i in range(1, 11)]])  # the teacher disagrees with c0
    ev = MatryoshkaRetrievalEvaluator(val, [4, 2], signal="teacher")
    assert ev.primary_metric == "val_teacher_ndcg@10_d4"
    rng = np.random.default_rng(0)
    cv = rng.normal(size=(12, 4)).astype(np.float32)
    qv = cv[[0]] * 1.0  # the query sits on c0: synthetic perfect
    m = ev.metrics_for(qv, cv)
    assert m["val_ndcg@10_d4"] == pytest.approx(1.0) and m["val_mrr@10_d4"] == pytest.approx(1.0)
    assert m["val_teacher_ndcg@10_d4"] < 0.95
    qv_teacher = cv[[1]]  # on the teacher's first choice
    assert ev.metrics_for(qv_teacher, cv)["val_teacher_ndcg@10_d4"] > m["val_teacher_ndcg@10_d4"]
    with pytest.raises(ValueError, match="teacher's labels"):
        MatryoshkaRetrievalEvaluator(ValidationSet({"q": "x"}, corpus, {"q": {"c0"}}), [4], signal="teacher")


def _c(name, score):
    return Candidate(name, {"k_d8": score, "k_d4": score / 2})


def test_guard_choice() -> None:
    kw = {"key": lambda d: f"k_d{d}", "dims": [8, 4], "primary_dim": 8, "signal": "sig"}
    v = choose([_c("base", 0.62), _c("tuned", 0.61)], promote="if_better", **kw)
    assert v.promoted == "base" and v.better is False
    assert v.message == ("the tuned model is not better than the base model on sig at 8 d: 0.6100 vs 0.6200; "
                         "the job's model is the base model")
    assert choose([_c("base", 0.62), _c("tuned", 0.62)], promote="if_better", **kw).promoted == "base"  # a tie
    assert choose([_c("base", 0.62), _c("tuned", 0.61)], promote="always", **kw).promoted == "tuned"
    better = choose([_c("base", 0.5), _c("tuned", 0.6), _c("averaged", 0.7)], promote="if_better", **kw)
    assert better.promoted == "averaged" and better.better and better.scores["tuned"] == {"8": 0.6, "4": 0.3}
    assert choose([_c("base", 0.5), _c("tuned", 0.7), _c("averaged", 0.6)], promote="always", **kw).promoted \
        == "averaged"
    blind = choose([Candidate("base", {}), Candidate("tuned", {})], promote="if_better", **kw)
    assert blind.promoted == "tuned" and blind.better is None and "could not compare" in blind.message
    as_manifest = v.as_manifest("synthetic", 8, "if_better")
    assert as_manifest["promoted"] == "base" and as_manifest["scores"]["base"]["8"] == 0.62


def test_distillation_losses_are_built_and_train_toward_the_teacher(st_model) -> None:
    from sentence_transformers.sentence_transformer import losses

    from embedforge.training.distill import ScaledCosine, WeightedSum
    from embedforge.training.losses import build_loss

    cfg = TrainConfig(teacher="hybrid", loss="margin_mse", max_negatives=2, matryoshka_dims=[384, 64])
    loss = build_loss(st_model, cfg)
    assert isinstance(loss, losses.MatryoshkaLoss) and isinstance(loss.loss, losses.MarginMSELoss)
    assert isinstance(loss.loss.similarity_fct, ScaledCosine) and loss.loss.similarity_fct.scale == 20
    kl = build_loss(st_model, TrainConfig(teacher="hybrid", loss="distill_kl", max_negatives=2, mnrl_weight=0.5))
    assert isinstance(kl.loss, WeightedSum) and isinstance(kl.loss.main, losses.DistillKLDivLoss)
    assert isinstance(kl.loss.extra, losses.MultipleNegativesRankingLoss) and kl.loss.weight == 0.5

    texts = [["solar panels", "wind power"], ["photovoltaic cells convert light", "turbines in the wind"],
             ["a recipe for bread", "the history of rome"], ["stock markets fell", "a football match"]]
    features = [st_model.tokenize(t) for t in texts]
    agree = torch.tensor([[6.0, 1.0, 0.0], [6.0, 1.0, 0.0]])  # the teacher's order matches the student's
    disagree = torch.tensor([[0.0, 6.0, 1.0], [0.0, 1.0, 6.0]])
    for cfg in (TrainConfig(teacher="hybrid", loss="margin_mse", max_negatives=2),
                TrainConfig(teacher="hybrid", loss="distill_kl", max_negatives=2, mnrl_weight=0.1)):
        loss = build_loss(st_model, cfg)
        with torch.no_grad():
            assert float(loss(features, agree)) < float(loss(features, disagree))


def test_teacher_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="trains on teacher scores"):
        TrainConfig(loss="margin_mse")
    with pytest.raises(ValidationError, match="teacher_model"):
        TrainConfig(teacher="cross_encoder")
    with pytest.raises(ValidationError, match="primary_dim"):
        TrainConfig(primary_dim=100)
    with pytest.raises(ValidationError, match="teacher_gains"):
        TrainConfig(teacher_gains=[0, 0])
    with pytest.raises(ValidationError, match="adapter"):
        TrainConfig(mode="adapter", weight_averaging=0.5)
    assert TrainConfig().promote == "if_better" and TrainConfig().validation == "teacher"


def test_interpolate_is_wise_ft() -> None:
    tuned = {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([1, 2])}
    start = {"w": torch.tensor([3.0, 7.0]), "ids": torch.tensor([0, 0])}
    out = interpolate(tuned, start, 0.25)
    assert torch.allclose(out["w"], torch.tensor([1.5, 4.0])) and torch.equal(out["ids"], tuned["ids"])
    with pytest.raises(ValueError, match="differ"):
        interpolate(tuned, {"w": start["w"]}, 0.5)


@pytest.fixture(scope="module")
def adi_passages() -> list[str]:
    import json

    from embedforge.data.ingest import BUILTIN_DIR

    docs = [json.loads(line) for line in (BUILTIN_DIR / "adi" / "corpus.jsonl").read_text().splitlines()]
    return [f"{d['title']} {d['text']}" for d in docs]


def test_cross_encoder_and_dense_teachers_rank_the_corpus(tmp_path, minilm_path, encoder, adi_passages) -> None:
    """A tiny randomly initialised cross-encoder (MiniLM's config, 2 layers) saved to tmp re-scores the hybrid
    teacher's candidates; the dense teacher is a plain search with another bi-encoder (here MiniLM itself)."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedforge.search.index import search
    from embedforge.training.teacher import CrossEncoderTeacher, DenseTeacher, HybridTeacher, build_teacher

    config = BertConfig.from_pretrained(str(minilm_path), num_labels=1, num_hidden_layers=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "ce")
    AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(tmp_path / "ce")

    queries = ["computer retrieval of documents", "library catalog cards"]
    hybrid = HybridTeacher(adi_passages, encoder, depth=20)
    h_scores, h_ids = hybrid.rank(queries, 20)
    assert h_ids.shape == (2, 20) and (np.diff(h_scores, axis=1) <= 0).all()
    ce = CrossEncoderTeacher(adi_passages, hybrid, str(tmp_path / "ce"), device="cpu")
    scores, ids = ce.rank(queries, 5)
    assert ids.shape == (2, 5) and (np.diff(scores, axis=1) <= 0).all()
    reference = CrossEncoder(str(tmp_path / "ce"), device="cpu")
    for q, cand, row_ids, row_scores in zip(queries, h_ids, ids, scores, strict=True):
        assert set(row_ids) <= set(cand)  # re-scored first-stage candidates only
        expected = reference.predict([(q, adi_passages[i]) for i in cand])
        np.testing.assert_allclose(row_scores, np.sort(expected)[::-1][:5], rtol=1e-4, atol=1e-5)

    dense = DenseTeacher(adi_passages, encoder)
    d_scores, d_ids = dense.rank(queries, 5)
    ref_scores, ref_ids = search(encoder.encode(queries), encoder.encode(adi_passages), 5)
    np.testing.assert_array_equal(d_ids, ref_ids)
    assert isinstance(build_teacher("cross_encoder", adi_passages[:10], start_model=str(minilm_path),
                                    teacher_model=str(tmp_path / "ce"), device="cpu", depth=10), CrossEncoderTeacher)
    with pytest.raises(ValueError, match="teacher_model"):
        build_teacher("dense", adi_passages, start_model=str(minilm_path), teacher_model=None, device="cpu", depth=10)


def test_auto_temperature_matches_the_median_margins() -> None:
    from embedforge.training.teacher import auto_temperature

    vectors = {"q": [1.0, 0.0], "p": [0.8, 0.6], "n": [0.0, 1.0]}  # cos(q, p) - cos(q, n) = 0.8

    def encode(texts):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    triples = [{"query": "q", "positive": "p", "negatives": ["n"], "pos_score": 10.0, "neg_scores": [2.0]}] * 3
    assert auto_temperature(triples, encode, scale=20) == pytest.approx(8.0 / 16.0)
    flipped = [{**t, "positive": "n", "negatives": ["p"]} for t in triples]
    assert auto_temperature(flipped, encode, scale=20) == 1.0  # the student ranks them the other way: fallback
    assert TrainConfig(teacher="hybrid", loss="distill_kl", teacher_temperature="auto").teacher_temperature == "auto"
    with pytest.raises(ValidationError, match="teacher_temperature"):
        TrainConfig(teacher_temperature=0.0)


def test_a_local_teacher_is_content_hashed_and_checked_before_the_run(tmp_path) -> None:
    from embedforge.preflight import preflight
    from embedforge.spec import SpecError, validate_dict

    teacher = tmp_path / "ce"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    cfg = TrainConfig(teacher="cross_encoder", teacher_model=str(teacher))
    before = cfg.input_fingerprint()
    (teacher / "config.json").write_text('{"num_labels": 1}')
    assert before and cfg.input_fingerprint() != before
    assert TrainConfig().input_fingerprint() is None
    job = validate_dict({"name": "t", "base_model": "all-MiniLM-L6-v2", "stages": {"train": {
        "teacher": "dense", "teacher_model": str(tmp_path / "missing")}}})
    with pytest.raises(SpecError, match=r"stages\.train\.teacher_model"):
        preflight(job)
