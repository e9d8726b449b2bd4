"""The real CLI: `embedforge evaluate`, `bench`, `drift` and the `evaluate` stage, on ADI (82 docs, 35 queries)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedforge.evaluation.report import PLOTS, RESULT_KEYS


@pytest.fixture(scope="module")
def evaluated(cli, adi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "adi"
    cli("evaluate", "--model", "all-MiniLM-L6-v2", "--model", "bm25", "--dataset", str(adi_dir),
        "--dims", "384,96", "--quant", "none,int8,binary", "--latency-queries", "16", "--search-latency-queries", "20",
        "--out", str(out))
    return out


def test_evaluate_writes_results_with_documented_keys(evaluated: Path) -> None:
    rows = json.loads((evaluated / "results.json").read_text())
    assert len(rows) == 2 * 3 + 1
    for row in rows:
        assert set(RESULT_KEYS) <= set(row), set(RESULT_KEYS) - set(row)
        assert row["dataset"] == "adi" and 0.0 <= row["ndcg_at_10"] <= 1.0
        assert row["index_bytes"] > 0 and row["search_ms_p50"] > 0
    dense = {(r["dim"], r["quantization"]): r for r in rows if r["model"] == "all-MiniLM-L6-v2"}
    assert dense[(384, "none")]["encode_ms_p50"] > 0 and dense[(384, "none")]["hnsw_search_ms_p50"] > 0
    assert dense[(384, "none")]["ndcg_at_10"] > dense[(96, "none")]["ndcg_at_10"]
    assert dense[(96, "binary")]["index_bytes"] < dense[(96, "int8")]["index_bytes"] < dense[(96, "none")]["index_bytes"]


def test_evaluate_writes_per_query_report_and_plots(evaluated: Path) -> None:
    per_query = [json.loads(line) for line in (evaluated / "per_query.jsonl").read_text().splitlines()]
    assert len(per_query) == 7 * 35
    assert {"query_id", "ndcg_at_10", "model", "dim", "quantization"} <= set(per_query[0])
    report = (evaluated / "report.md").read_text()
    assert "| all-MiniLM-L6-v2 | 384 | none |" in report and "## Significance" in report
    for name in PLOTS:
        data = (evaluated / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    tests = json.loads((evaluated / "significance.json").read_text())["tests"]
    assert tests and tests[0]["model"] == "bm25" and 0 <= tests[0]["p_value_randomization"] <= 1


def test_evaluate_bad_option_fails_naming_it(cli, cli_here, adi_dir: Path, tmp_path: Path) -> None:
    proc = cli("evaluate", "--model", "bm25", "--dataset", str(adi_dir), "--quant", "none,int4", "--out",
               str(tmp_path / "o"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "--quant: " in out and "int4" not in out.split("--quant: ")[0]
    assert "Traceback" not in out and not (tmp_path / "o").exists()
    proc = cli_here("evaluate", "--model", "bm25", "--dataset", str(adi_dir), "--score-by", "chunks", "--out",
               str(tmp_path / "o"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "--score-by: " in out and "best_passage" in out and "Traceback" not in out
    proc = cli_here("evaluate", "--model", "bm25", "--dataset", str(adi_dir), "--passage-tokens", "64", "--out",
                    str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "--passage-tokens 64: applies only with --score-by best_passage" in proc.stdout + proc.stderr
    for weights, says in (("0.5,-1", "greater than 0"), ("half", "comma-separated numbers")):
        proc = cli_here("evaluate", "--model", "bm25", "--dataset", str(adi_dir), "--hybrid", "zscore", "--bm25-weights",
                   weights, "--out", str(tmp_path / "o"), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "--bm25-weights: " in out and says in out and "Traceback" not in out
    proc = cli_here("evaluate", "--model", "bm25", "--dataset", str(adi_dir), "--bm25-stemmer", "klingon", "--out",
                    str(tmp_path / "o"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "--bm25-stemmer: no Snowball stemmer 'klingon'" in out and "english" in out


def test_evaluate_bad_qrels_fails_naming_file_and_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    proc = cli("evaluate", "--model", "bm25", "--dataset", str(bad), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 1 and "test.tsv:2" in proc.stdout + proc.stderr


def test_bench_checks_expectations(cli, adi_dir: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: tiny\ndatasets: [{adi_dir}]\nmodels: [bm25]\nbm25_stemmer: null\nsearch_latency_queries: 5\n"
                     "expect: [{dataset: adi, model: bm25, value: 0.4214, tolerance: 0.003},\n"
                     "         {dataset: adi, model: bm25, metric: p_at_1, value: 0.99, tolerance: 0.01}]\n")
    proc = cli("bench", str(suite), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1 and "1 reference figure(s) missed" in proc.stdout + proc.stderr
    checks = json.loads((tmp_path / "out" / "expectations.json").read_text())
    assert checks[0]["ok"] and abs(checks[0]["measured"] - 0.4214) < 0.003
    assert not checks[1]["ok"] and checks[1]["measured"] < 0.98
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["model"] == "bm25"


def test_drift_exit_code_follows_thresholds(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 24))
    a = centers[rng.integers(0, 3, 400)] + 0.3 * rng.normal(size=(400, 24))
    b = centers[rng.integers(0, 3, 400)] + 0.3 * rng.normal(size=(400, 24))
    c = b + 2.0 * rng.normal(size=24)
    for name, x in (("a", a), ("b", b), ("c", c)):
        np.save(tmp_path / f"{name}.npy", x.astype(np.float32))
    same = cli("drift", "--reference", str(tmp_path / "a.npy"), "--current", str(tmp_path / "b.npy"),
               "--out", str(tmp_path / "same.json"))
    assert json.loads(same.stdout)["drift"] is False
    moved = cli("drift", "--reference", str(tmp_path / "a.npy"), "--current", str(tmp_path / "c.npy"), check=False)
    report = json.loads(moved.stdout)
    assert moved.returncode == 1 and report["drift"] and report["reasons"]


def test_evaluate_stage_in_a_job(cli, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: evaljob\nbase_model: all-MiniLM-L6-v2\nstages:\n  ingest: {sources: [{path: builtin:adi}]}\n"
                   "  chunk: {max_tokens: 256}\n  evaluate:\n    datasets: [builtin:adi]\n    dims: [384, 48]\n"
                   "    quantizations: [none]\n    n_resamples: 500\n    latency: false\n")
    cli("run", str(job), f"run_dir={tmp_path / 'runs'}")
    (stage_dir,) = (tmp_path / "runs" / "evaljob").glob("evaluate-*")
    assert (stage_dir / "_SUCCESS").is_file()
    rows = json.loads((stage_dir / "results.json").read_text())
    assert {(r["model"], r["dim"]) for r in rows} == {("base", 384), ("base", 48), ("bm25", None)}
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["primary_metric"] == "ndcg_at_10"
    assert "train (the job has no train stage)" in manifest["skipped_models"]
    assert manifest["ndcg_at_10"]["adi/base/384/none"] == pytest.approx(
        next(r["ndcg_at_10"] for r in rows if r["dim"] == 384), abs=1e-4)
    assert (stage_dir / "report.md").is_file() and (stage_dir / "ndcg_vs_dim.png").is_file()
