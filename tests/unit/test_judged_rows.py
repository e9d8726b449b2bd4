"""Training rows from judged queries (``train.judged_train_split``): the positive is the judged document's chunk
the start model ranks highest, hard negatives come from documents not judged relevant, unusable pairs are
quarantined with a reason; the config and the preflight check refuse a split that also validates or is evaluated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from embedforge.configs.train import TrainConfig
from embedforge.data.beir import split_judged
from embedforge.encoding.encoder import get_encoder
from embedforge.preflight import preflight
from embedforge.spec import SpecError, validate_dict
from embedforge.training.judged_rows import judged_repeat, judged_rows

PASSAGES = {
    "a-0": "Vitamin D supplements lower the risk of bone fractures in elderly women.",
    "a-1": "The trial was funded by a national research council and ran for five years.",
    "b-0": "Calcium intake and bone density in postmenopausal women: a cohort study.",
    "c-0": "Deep sea hydrothermal vents host unusual bacterial communities.",
    "d-0": "Statins reduce cholesterol and cardiovascular events in adults.",
    "e-0": "Bone fractures in older women: vitamin D levels measured in blood.",
}
DOCS = {"a-0": "A", "a-1": "A", "b-0": "B", "c-0": "C", "d-0": "D", "e-0": "E"}


@pytest.fixture(scope="module")
def encode(minilm_path: Path):
    encoder = get_encoder(minilm_path, device="cpu")
    return lambda texts: encoder.encode(texts, cache=False)


def test_positive_is_the_best_chunk_and_negatives_skip_judged_documents(encode) -> None:
    queries = {"q1": "does vitamin D prevent fractures in old women?", "q2": "who funded the five-year trial"}
    qrels = {"q1": {"A": 1, "E": 1, "C": 0}, "q2": {"A": 2}}
    rows, quarantine = judged_rows(queries, qrels, PASSAGES, DOCS, encode, n_negatives=2, relative_margin=0.0)
    assert quarantine == []
    by_pair = {(r["query_id"], r["positive"]): r for r in rows}
    assert len(rows) == 3  # (q1, A), (q1, E), (q2, A); the grade-0 judgement is not a positive
    assert ("q1", PASSAGES["a-0"]) in by_pair and ("q2", PASSAGES["a-1"]) in by_pair  # the chunk each query is about
    for r in rows:
        assert len(r["negatives"]) == 2
        relevant = {d for d, g in qrels[r["query_id"]].items() if g > 0}
        assert not {DOCS[c] for c, t in PASSAGES.items() if t in r["negatives"]} & relevant
    # q1's nearest non-relevant chunk is the calcium/bone-density abstract
    assert by_pair[("q1", PASSAGES["a-0"])]["negatives"][0] == PASSAGES["b-0"]


def test_negatives_close_to_the_positive_are_left_out_and_short_rows_quarantined(encode) -> None:
    query = "does vitamin D prevent fractures in old women?"
    q = encode([query])[0]
    score = {c: float(v @ q) for c, v in zip(PASSAGES, encode(list(PASSAGES.values())), strict=True)}
    others = sorted((c for c in PASSAGES if DOCS[c] != "A"), key=lambda c: -score[c])  # by hand: B, C, D, E ranked
    for margin in (0.0, 0.3, 0.6):
        ceiling = score["a-0"] * (1 - margin)
        expected = [PASSAGES[c] for c in others if score[c] <= ceiling]
        rows, quarantine = judged_rows({"q1": query}, {"q1": {"A": 1}}, PASSAGES, DOCS, encode, n_negatives=4,
                                       relative_margin=margin)
        if len(expected) == 4:
            assert quarantine == [] and rows[0]["negatives"] == expected
        else:  # a candidate within the margin of the positive is no negative: the row is short and quarantined
            assert rows == [] and quarantine == [{"source": "judged", "query_id": "q1", "document": "A",
                                                  "reason": f"only {len(expected)} hard negatives, 4 needed"}]
    assert score["e-0"] > score["a-0"] * 0.4  # so the wide margin really left E out above


def test_each_row_measures_the_margin_against_its_own_positive(encode) -> None:
    """A query judged relevant to a close and a distant document: the close document's row may take a negative
    that scores above the distant one (against the query's lowest positive it would get none of those)."""
    query = "does vitamin D prevent fractures in old women?"
    q = encode([query])[0]
    score = {c: float(v @ q) for c, v in zip(PASSAGES, encode(list(PASSAGES.values())), strict=True)}
    others = sorted((c for c in PASSAGES if DOCS[c] not in {"A", "D"}), key=lambda c: -score[c])
    rows, quarantine = judged_rows({"q1": query}, {"q1": {"A": 1, "D": 1}}, PASSAGES, DOCS, encode, n_negatives=1)
    assert quarantine == []
    got = {r["positive"]: r["negatives"] for r in rows}
    for positive in ("a-0", "d-0"):
        first = next(c for c in others if score[c] <= score[positive] * 0.95)  # by hand, from the scores
        assert got[PASSAGES[positive]] == [PASSAGES[first]]
    assert score[next(c for c in others if score[c] <= score["a-0"] * 0.95)] > score["d-0"]  # the case above


def test_unknown_documents_and_empty_queries_are_quarantined(encode) -> None:
    rows, quarantine = judged_rows({"q1": "vitamin D", "q2": "  "}, {"q1": {"A": 1, "Z": 1}, "q2": {"B": 1}},
                                   PASSAGES, DOCS, encode)
    assert [(r["query_id"], r["positive"], r["negatives"]) for r in rows] == [("q1", PASSAGES["a-0"], [])]
    assert {(q["query_id"], q["reason"]) for q in quarantine} == {
        ("q1", "judged document 'Z' is not among the job's chunks"), ("q2", "empty query")}


def test_config_refuses_a_training_split_that_also_validates() -> None:
    ok = TrainConfig(judged_queries="beir:scifact", judged_split="train-dev", judged_train_split="train-heldout",
                     query_kinds=[])
    assert ok.judged_train_repeat == "balance"
    with pytest.raises(ValidationError, match="would also choose its checkpoint"):
        TrainConfig(judged_queries="beir:scifact", judged_split="train", judged_train_split="train")
    with pytest.raises(ValidationError, match="judged_train_split needs judged_queries"):
        TrainConfig(judged_train_split="train")
    with pytest.raises(ValidationError, match="teacher scores"):
        TrainConfig(judged_queries="d", judged_split="a", judged_train_split="b", loss="distill_kl", teacher="hybrid")
    with pytest.raises(ValidationError, match=r"query_kinds: \[\] leaves no queries"):
        TrainConfig(query_kinds=[])
    with pytest.raises(ValidationError, match="judged_train_repeat"):
        TrainConfig(judged_queries="d", judged_split="a", judged_train_split="b", judged_train_repeat=0)


def test_balance_makes_judged_rows_about_as_many_as_synthetic_ones() -> None:
    assert judged_repeat("balance", 21766, 649) == 34  # SciFact: 566 train claims beside the job's synthetic rows
    assert judged_repeat("balance", 2356, 542) == 4  # Cranfield
    assert judged_repeat("balance", 0, 649) == 1  # query_kinds: [] (judged rows alone)
    assert judged_repeat("balance", 10**7, 3) == 100 and judged_repeat("balance", 10, 649) == 1  # bounds
    assert judged_repeat(3, 21766, 649) == 3  # a number is taken as given


def test_preflight_refuses_training_on_the_evaluated_or_validating_queries(tmp_path: Path, scifact_slice: Path,
                                                                           minilm_path: Path) -> None:
    data = tmp_path / "scifact"
    shutil.copytree(scifact_slice, data)
    split_judged(data, "train", dev_share=0.5)
    (data / "qrels" / "mixed.tsv").write_text((data / "qrels" / "train-dev.tsv").read_text())

    def job(train_split: str, eval_split: str) -> object:
        return validate_dict({"name": "j", "base_model": str(minilm_path), "stages": {
            "ingest": {"sources": [{"path": str(data)}]}, "chunk": {}, "generate": {"sources": ["title"]},
            "train": {"judged_queries": str(data), "judged_split": "train-dev", "judged_train_split": train_split},
            "evaluate": {"datasets": [str(data)], "split": eval_split}}})

    preflight(job("train-heldout", "test"))  # divided: fine
    with pytest.raises(SpecError, match=r"judged_train_split: \d+ of the queries that evaluate measures"):
        preflight(job("train-heldout", "train-heldout"))
    with pytest.raises(SpecError, match=r"judged_train_split: \d+ queries of qrels/mixed\.tsv \(trained on\) also "
                                        r"choose the checkpoint"):
        preflight(job("mixed", "test"))
    with pytest.raises(SpecError, match=r"lacks qrels/nope\.tsv"):
        preflight(job("nope", "test"))
