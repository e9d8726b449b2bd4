"""Evaluation outputs that other tools read: TREC run files (scored here by pytrec_eval, trec_eval's own code,
against the dataset's qrels, to the figure results.json reports) and MTEB-style result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytrec_eval

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.evaluation.harness import ModelRef, evaluate_models
from embedforge.evaluation.report import write_report


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, adi_dir: Path, encoder) -> Path:
    out = tmp_path_factory.mktemp("eval")
    cfg = EvaluateConfig(dims=[384, 96], quantizations=["none", "int8"], hybrid=["rrf"], latency=False,
                         n_resamples=200, cache=False)
    result = evaluate_models([load_beir(adi_dir)], [ModelRef("minilm", "all-MiniLM-L6-v2"), ModelRef("bm25", "bm25")],
                             cfg)
    write_report(result, out)
    return out


def _trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == path.stem and int(rank) >= 1
        run.setdefault(qid, {})[doc] = float(score)
    return run


def test_trec_runs_score_as_results_json_says(report_dir: Path, adi_dir: Path) -> None:
    files = sorted(p.name for p in (report_dir / "runs" / "adi").glob("*.trec"))
    assert files == ["bm25.trec", "minilm+bm25-rrf-d384.trec", "minilm+bm25-rrf-d96.trec", "minilm-d384.trec",
                     "minilm-d96.trec"]
    qrels: dict[str, dict[str, int]] = {}
    for line in (adi_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, grade = line.split("\t")
        qrels.setdefault(qid, {})[doc] = int(grade)
    rows = json.loads((report_dir / "results.json").read_text())
    expected = {"minilm-d96.trec": next(r for r in rows if r["model"] == "minilm" and r["dim"] == 96
                                        and r["quantization"] == "none"),
                "bm25.trec": next(r for r in rows if r["model"] == "bm25"),
                "minilm+bm25-rrf-d384.trec": next(r for r in rows if r["model"] == "minilm+bm25-rrf" and r["dim"] == 384)}
    for name, row in expected.items():
        run = _trec(report_dir / "runs" / "adi" / name)
        scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        ndcg = sum(s["ndcg_cut_10"] for s in scores.values()) / len(qrels)
        assert ndcg == pytest.approx(row["ndcg_at_10"], abs=1e-4), name


def test_mteb_style_results(report_dir: Path) -> None:
    full = json.loads((report_dir / "mteb" / "minilm" / "no_revision_available" / "ADI.json").read_text())
    small = json.loads((report_dir / "mteb" / "minilm__d96" / "no_revision_available" / "ADI.json").read_text())
    rows = json.loads((report_dir / "results.json").read_text())
    row = next(r for r in rows if r["model"] == "minilm" and r["dim"] == 384 and r["quantization"] == "none")
    scores = full["scores"]["test"][0]
    assert full["task_name"] == "ADI" and scores["main_score"] == scores["ndcg_at_10"] == row["ndcg_at_10"]
    assert scores["hf_subset"] == "default" and {"mrr_at_10", "recall_at_100"} <= set(scores)
    assert small["scores"]["test"][0]["ndcg_at_10"] != scores["ndcg_at_10"]
    assert not (report_dir / "mteb" / "minilm+bm25-rrf").exists()  # fused rows are not one model's results


def test_tied_scores_are_written_strictly_decreasing() -> None:
    """trec_eval sorts by score (ties by document id), not by the rank column: ties must not reorder a run."""
    from embedforge.evaluation.report import _strictly_decreasing

    assert _strictly_decreasing([0.5, 0.5, 0.5, 0.4]) == [0.5, 0.499999, 0.499998, 0.4]
    assert _strictly_decreasing([0.0327868852, 0.03278688521, 0.03]) == [0.032787, 0.032786, 0.03]
    assert _strictly_decreasing([3.0, 2.0, 1.0]) == [3.0, 2.0, 1.0]  # no ties: unchanged
