"""Study scripts of benchmarks/: gain_by_seen_docs.py (queries split by whether a relevant document was trained on,
the share of top 10 taken by trained documents) and dev_fidelity.py (a run's three gains side by side)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gain_by_seen_docs.py"


def _qrels(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in pairs))
    return path


def test_groups_gains_and_crowding_are_counted_per_query(tmp_path: Path) -> None:
    train = _qrels(tmp_path / "train.tsv", [("t1", "dA"), ("t2", "dB")])
    test = _qrels(tmp_path / "test.tsv", [("q1", "dA"), ("q2", "dB"), ("q3", "dC"), ("q4", "dD")])
    ev = tmp_path / "evaluate"
    (ev / "runs" / "ds").mkdir(parents=True)
    scores = {"base": {"q1": 0.2, "q2": 0.4, "q3": 0.9, "q4": 0.8}, "tuned": {"q1": 0.6, "q2": 0.8, "q3": 0.7, "q4": 0.6}}
    (ev / "per_query.jsonl").write_text("".join(
        json.dumps({"dataset": "ds", "model": m, "dim": 8, "quantization": "none", "query_id": q, "ndcg_at_10": v})
        + "\n" for m, per in scores.items() for q, v in per.items()))
    # tuned puts trained, non-relevant dB into q3's and q4's top 10 (and dA into q4's); q1's own dA does not count
    ranks = {"base": {"q1": ["dA", "dX"], "q2": ["dB"], "q3": ["dC"], "q4": ["dD"]},
             "tuned": {"q1": ["dA", "dB"], "q2": ["dB"], "q3": ["dB", "dC"], "q4": ["dA", "dB", "dD"]}}
    for model, per in ranks.items():
        (ev / "runs" / "ds" / f"{model}-d8.trec").write_text("".join(
            f"{q} Q0 {d} {i + 1} {1 - i / 10} {model}\n" for q, docs in per.items() for i, d in enumerate(docs)))
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(SCRIPT), str(ev), "--train-qrels", str(train), "--test-qrels", str(test),
                    "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["trained_documents"] == 2
    rows = {r["group"]: r for r in result["rows"]}
    seen, unseen = rows["a relevant document was trained on"], rows["no relevant document was trained on"]
    assert seen["n_queries"] == 2 and abs(seen["delta"] - 0.4) < 1e-9
    assert unseen["n_queries"] == 2 and abs(unseen["delta"] - (-0.2)) < 1e-9
    share = {(c["model"], c["group"]): c["trained_not_relevant_share_of_top10"] for c in result["crowding"]}
    assert share[("base", "a relevant document was trained on")] == 0.0
    assert share[("tuned", "a relevant document was trained on")] == 1 / 20  # q1's dB
    assert share[("base", "no relevant document was trained on")] == 0.0
    assert share[("tuned", "no relevant document was trained on")] == 3 / 20  # q3's dB, q4's dA and dB


def test_dev_fidelity_sets_each_runs_three_gains_side_by_side(tmp_path: Path) -> None:
    script = SCRIPT.parent / "dev_fidelity.py"
    dev = tmp_path / "dev"
    dev.mkdir()
    scores = {"base": [0.5, 0.5, 0.5, 0.5], "run": [0.6, 0.7, 0.5, 0.6]}
    (dev / "per_query.jsonl").write_text("".join(
        json.dumps({"model": m, "dim": 8, "quantization": "none", "query_id": f"q{i}", "ndcg_at_10": v}) + "\n"
        for m, vals in scores.items() for i, v in enumerate(vals)))
    train, evaluate = tmp_path / "train-x", tmp_path / "evaluate-x"
    train.mkdir()
    evaluate.mkdir()
    (train / "manifest.json").write_text(json.dumps({
        "guard": {"primary_dim": 8, "signal": "judged", "scores": {"base": {"8": 0.80}, "tuned": {"8": 0.86}}},
        "training": {"best": "checkpoint-40"}, "config": {"max_steps": 40}}))
    (evaluate / "significance.json").write_text(json.dumps({"tests": [
        {"model": "tuned", "reference": "base", "dim": 8, "delta": 0.05, "p_value_randomization": 0.2}]}))
    out = tmp_path / "fidelity.json"
    subprocess.run([sys.executable, str(script), str(dev), "--run", f"run={train},{evaluate}", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    run = json.loads(out.read_text())["runs"]["run"]
    assert abs(run["train_stage"]["delta"] - 0.06) < 1e-9
    assert abs(run["dev"]["8"]["delta"] - 0.1) < 1e-9
    assert run["heldout"]["8"]["delta"] == 0.05
