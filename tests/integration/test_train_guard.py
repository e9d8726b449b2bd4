"""The train stage's regression guard on the built-in ADI corpus (82 abstracts, packaged with embedforge).

Inputs are CHUNKS / QUERIES shards built here from the ADI abstracts (a title, a sentence and a three-keyword query
per abstract, every fifth abstract held out for validation); the stage runs through the runner. A run made to hurt
(a learning rate that wrecks MiniLM in four steps) must end with the start model promoted, byte-for-byte; the
same run with ``promote: always`` keeps the tuned model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from stage_inputs import adi_inputs, run_train, spec

from embedforge.data.ingest import BUILTIN_DIR
from embedforge.data.shards import shard_name
from embedforge.evaluation.metrics import evaluate_run, run_from_rankings
from embedforge.spec import validate_dict
from embedforge.training.yardstick import metric_key


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def adi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    return adi_inputs(tmp_path_factory.mktemp("adi_inputs"))


@pytest.fixture(scope="module")
def hurt_runs(tmp_path_factory: pytest.TempPathFactory, adi: dict) -> dict[str, tuple[Path, dict]]:
    """The same harmful training (learning rate 0.02) with promote if_better and always."""
    root = tmp_path_factory.mktemp("hurt")
    runs = {}
    for promote in ("if_better", "always"):
        out = root / f"train-{promote}"
        runs[promote] = out, run_train(spec(root, learning_rate=2e-2, promote=promote), adi, out)
    return runs


def test_harmful_training_promotes_the_base_model(hurt_runs: dict, minilm_path: Path, caplog) -> None:
    out, manifest = hurt_runs["if_better"]
    guard = manifest["guard"]
    assert manifest["promoted"] == "base" and guard["better"] is False
    base, tuned = guard["scores"]["base"]["384"], guard["scores"]["tuned"]["384"]
    assert tuned < base - 0.05, (tuned, base)  # the run really hurt
    assert guard["message"] == (f"the tuned model is not better than the base model on teacher-agreement nDCG@10 at "
                                f"384 d: {tuned:.4f} vs {base:.4f}; the job's model is the base model")
    saved, start = _weights(out / "model"), _weights(minilm_path)
    assert len(saved) > 100 and set(saved) <= set(start)  # the start file also holds the position_ids buffer
    assert all(torch.equal(saved[k], start[k]) for k in saved), "the promoted model is not the start model"
    card = (out / "model" / "README.md").read_text()
    assert "Not promoted" in card and f"{tuned:.4f} vs {base:.4f}" in card
    assert manifest["metrics_after"][metric_key("teacher", 384)] == pytest.approx(tuned)  # the default signal
    assert manifest["token_weights"]["applied"] is True  # the pooling weights go on the kept base model too
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "model" / "modules.json").read_text())]
    assert modules == ["Transformer", "WordWeights", "Pooling", "Dense", "Normalize"]
    assert manifest["corpus_rotation"]["applied"] is True  # ... and so does the corpus rotation


def test_start_model_anchor_keeps_the_batch_rankings_nearer_the_start(tmp_path: Path, adi: dict,
                                                                      minilm_path: Path) -> None:
    # the same short, fast training with and without train.anchor_weight; pooling weights and rotation off, so the
    # saved models differ from the start model by training alone
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    def batch_kl(model_dir: Path) -> float:
        """KL(start ‖ model) over ADI's validation titles × abstracts, each title against every abstract."""
        docs = [json.loads(line) for line in (BUILTIN_DIR / "adi" / "corpus.jsonl").read_text().splitlines()][::5]
        titles, texts = [d["title"] for d in docs], [d["text"] for d in docs]

        def scores(path: Path) -> torch.Tensor:
            model = SentenceTransformer(str(path), device="cpu")
            q, p = (torch.as_tensor(model.encode(t, normalize_embeddings=True)) for t in (titles, texts))
            return 20.0 * q @ p.T

        return float(F.kl_div(F.log_softmax(scores(model_dir), -1), F.log_softmax(scores(minilm_path), -1),
                              log_target=True, reduction="batchmean"))

    kls, manifests = {}, {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"train-{weight:g}"
        manifests[weight] = run_train(spec(tmp_path, learning_rate=3e-4, max_steps=12, eval_steps=6, promote="always",
                                           anchor_weight=weight, token_weights="none", corpus_rotation="none"),
                                      adi, out)
        kls[weight] = batch_kl(out / "model")
    assert kls[0.0] > 0.01, kls  # the plain run moved the rankings
    # with the same seed and no pull the two runs would be identical; the anchor slows the drift (about a tenth
    # here: Adam's first steps move every weight by about the learning rate whatever the anchor says)
    assert kls[50.0] < 0.95 * kls[0.0], kls
    assert "anchor_kl" not in manifests[0.0]
    recorded = manifests[50.0]["anchor_kl"]
    assert recorded["first_10_batches"] >= 0 and recorded["last_10_batches"] >= 0


def test_training_stops_when_the_tuned_model_keeps_trailing_the_start_model(tmp_path: Path, adi: dict,
                                                                            caplog) -> None:
    # the same harmful learning rate, 8 steps planned, a validation every 2: behind at steps 2 and 4 → stop at 4
    manifest = run_train(spec(tmp_path, learning_rate=2e-2, max_steps=8, stop_behind_start=2), adi,
                         tmp_path / "train")
    assert manifest["stopped_behind_start"] == {"step": 4, "max_steps": 8, "validations_behind": 2}
    assert manifest["training"]["steps"] == 4 and manifest["promoted"] == "base"
    assert "stopping at step 4 of 8" in caplog.text


def test_early_stopping_ends_the_run_after_its_best_checkpoint(tmp_path: Path, adi: dict, caplog) -> None:
    # the harmful learning rate with stop_behind_start off: each validation is worse than the one before, so with
    # patience 1 the run ends at the first validation that fails to beat the best checkpoint so far
    manifest = run_train(spec(tmp_path, learning_rate=2e-2, max_steps=8, stop_behind_start=0,
                              early_stopping_patience=1), adi, tmp_path / "train")
    metric = f"eval_{metric_key('teacher', 384)}"
    scores = [(e["step"], e[metric]) for e in manifest["training"]["eval_history"] if metric in e]
    stop = manifest["training"]["steps"]
    assert stop < 8 and manifest["stopped_without_gain"]["step"] == stop and "stopped_behind_start" not in manifest
    assert scores[-1][0] == stop
    before_stop = [s for _, s in scores[:-1]]
    assert before_stop == sorted(set(before_stop))  # every earlier validation was a new best ...
    assert scores[-1][1] <= max(before_stop)  # ... and the one at the stop was not
    best_step = max(scores[:-1], key=lambda s: s[1])[0]
    assert manifest["stopped_without_gain"]["best_checkpoint"] == f"checkpoint-{best_step}"
    # the kept checkpoint's logged validation is the tuned model's score (not encoded again)
    best_eval = next(e for e in manifest["training"]["eval_history"] if e["step"] == best_step)
    assert manifest["metrics_after"] == {k: best_eval[f"eval_{k}"] for k in manifest["metrics_before"]}
    assert f"stopped at step {stop} of 8" in caplog.text


def test_early_stopping_needs_keep_best() -> None:
    with pytest.raises(ValueError, match="early_stopping_patience needs keep_best"):
        validate_dict(spec(Path("/tmp/unused"), early_stopping_patience=2, keep_best=False))


def test_promote_always_keeps_the_tuned_model(hurt_runs: dict, minilm_path: Path) -> None:
    out, manifest = hurt_runs["always"]
    assert manifest["promoted"] == "tuned" and manifest["guard"]["better"] is False
    assert manifest["guard"]["message"].endswith("the job's model is the tuned model (promote: always)")
    saved, start = _weights(out / "model"), _weights(minilm_path)
    assert any(not torch.equal(saved[k], start[k]) for k in saved)
    assert "Not promoted" not in (out / "model" / "README.md").read_text()
    # both runs measured the same base and trained the same way
    other = hurt_runs["if_better"][1]["guard"]["scores"]
    assert manifest["guard"]["scores"] == other


def test_judged_queries_are_the_guards_signal(tmp_path: Path, adi: dict, minilm_path: Path) -> None:
    """ADI's own judged queries as the signal: the harmful run is caught on them, and the base model's score is
    the one an independent search of the 82 abstracts gives."""
    from sentence_transformers import SentenceTransformer

    from embedforge.data.beir import load_beir

    s = spec(tmp_path, learning_rate=2e-2, max_steps=2, validation="judged", judged_queries=str(BUILTIN_DIR / "adi"),
             judged_split="test", matryoshka_dims=[384], precision="fp32")
    manifest = run_train(s, adi, tmp_path / "train")
    guard = manifest["guard"]
    base, tuned = guard["scores"]["base"]["384"], guard["scores"]["tuned"]["384"]
    assert manifest["promoted"] == "base" and tuned < base - 0.05, (tuned, base)
    assert guard["message"].startswith("the tuned model is not better than the base model on judged-query nDCG@10")
    ds = load_beir(BUILTIN_DIR / "adi", "test")
    assert manifest["data"]["judged_queries"] == manifest["counts"]["judged_queries"] == len(ds.qrels)
    # the same search by hand: the base model (64 tokens, as trained), every abstract one chunk
    st = SentenceTransformer(str(minilm_path), device="cpu")
    st.max_seq_length = 64
    qv, dv = st.encode(ds.query_texts, normalize_embeddings=True), st.encode(ds.corpus_texts, normalize_embeddings=True)
    ranked = np.argsort(-(qv @ dv.T), axis=1)[:, :10]
    run = run_from_rankings(ds.query_ids, [[ds.corpus_ids[i] for i in row] for row in ranked])
    assert base == pytest.approx(evaluate_run(ds.qrels, run).aggregate["ndcg_at_10"], abs=2e-3)
    assert manifest["metrics_before"]["val_judged_ndcg@10_d384"] == base
    card = (tmp_path / "train" / "model" / "README.md").read_text()
    assert "## Validation (judged queries)" in card and f"{base:.4f}" in card


# ---------------------------------------------------------------- teacher-guided training


@pytest.fixture(scope="module")
def margin_mse_run(tmp_path_factory: pytest.TempPathFactory, adi: dict) -> tuple[Path, dict]:
    """Hybrid teacher (real BM25 + MiniLM), MarginMSE, teacher-agreement validation, WiSE-FT candidate; ADI's judged
    queries measured alongside."""
    root = tmp_path_factory.mktemp("teacher")
    out = root / "train-mm"
    s = spec(root, teacher="hybrid", loss="margin_mse", max_negatives=2, query_filter_rank=1,
             false_negative_margin=0.3, teacher_temperature=0.5, validation="both", weight_averaging=0.5,
             judged_queries=str(BUILTIN_DIR / "adi"), judged_split="test")  # measured, not the signal
    return out, run_train(s, adi, out)


def test_teacher_scores_and_negatives_are_written_to_triples(margin_mse_run: tuple[Path, dict], adi: dict,
                                                             encoder) -> None:
    import pyarrow.parquet as pq

    from embedforge.training.data import load_passages
    from embedforge.training.teacher import HybridTeacher

    out, manifest = margin_mse_run
    teacher = manifest["teacher"]
    triples = pq.read_table(out / "teacher_triples" / "shards" / shard_name(0)).to_pylist()
    dropped = (out / "teacher_dropped.jsonl").read_text().splitlines()
    assert teacher["kind"] == "hybrid" and teacher["kept"] == len(triples) > 20
    assert teacher["dropped"] == len(dropped) > 0 and teacher["kept"] + teacher["dropped"] == teacher["queries"]
    assert manifest["counts"]["teacher_dropped"] == len(dropped)
    assert manifest["data"]["source"] == "teacher" and manifest["data"]["train_rows"] == len(triples)
    # the same teacher, rebuilt here: every kept query has its passage first, negatives are the first candidates
    # after it that score at least the margin below it; every dropped query's passage is not first
    passages = load_passages(Path(adi["chunk"][1]))
    ids = list(passages)
    hybrid = HybridTeacher(list(passages.values()), encoder, depth=100)
    scores, ranked = hybrid.rank([t["query"] for t in triples], 100)
    for t, srow, irow in zip(triples, scores, ranked, strict=True):
        order = [ids[i] for i in irow if i >= 0]
        assert order[0] == t["pos_chunk_id"] and t["pos_score"] == pytest.approx(srow[0], abs=1e-4)
        expected = [(ids[i], s) for s, i in zip(srow[1:], irow[1:], strict=True) if i >= 0 and s < srow[0] - 0.3][:2]
        assert t["neg_chunk_ids"] == [c for c, _ in expected]
        assert t["neg_scores"] == pytest.approx([s for _, s in expected], abs=1e-4)
        assert len(t["negatives"]) == 2 and t["negatives"][0] == passages[t["neg_chunk_ids"][0]]
    first = [json.loads(line) for line in dropped][0]
    assert "rank" in first["reason"] or "outside" in first["reason"]


def test_margin_mse_trains_and_the_guard_uses_the_configured_signal(margin_mse_run: tuple[Path, dict]) -> None:
    from sentence_transformers import SentenceTransformer

    out, manifest = margin_mse_run
    guard = manifest["guard"]
    assert guard["signal"] == "both" and set(guard["scores"]) == {"base", "tuned", "averaged"}
    cands = manifest["candidate_metrics"]
    for name in ("base", "tuned", "averaged"):
        m = cands[name]
        assert 0 <= m["val_teacher_ndcg@10_d384"] <= 1 and 0 <= m["val_ndcg@10_d384"] <= 1
        assert m["val_mean_ndcg@10_d384"] == pytest.approx((m["val_teacher_ndcg@10_d384"] + m["val_ndcg@10_d384"]) / 2)
        assert guard["scores"][name]["384"] == m["val_mean_ndcg@10_d384"]
        assert 0 < m["val_judged_ndcg@10_d384"] < 1 and 0 < m["val_judged_ndcg@10_d96"] < 1
    losses = [loss for _, loss in manifest["training"]["loss_history"]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    best = max(("tuned", "averaged"), key=lambda n: cands[n]["val_mean_ndcg@10_d384"])
    expected = best if cands[best]["val_mean_ndcg@10_d384"] > cands["base"]["val_mean_ndcg@10_d384"] else "base"
    assert guard["candidate"] == expected and manifest["promoted"] == ("base" if expected == "base" else "tuned")
    assert SentenceTransformer(str(out / "model"), device="cpu").encode(["x"]).shape == (1, 384)


@pytest.mark.slow  # a third teacher training; MarginMSE with the teacher runs by default
def test_distill_kl_with_mnrl_trains_and_saves(tmp_path: Path, adi: dict) -> None:
    from sentence_transformers import SentenceTransformer

    s = spec(tmp_path, teacher="hybrid", loss="distill_kl", mnrl_weight=0.2, max_negatives=3, max_steps=2,
             validation="teacher", teacher_temperature="auto")
    manifest = run_train(s, adi, tmp_path / "train-kl")
    assert manifest["guard"]["signal"] == "teacher" and manifest["data"]["negatives"] == 3
    assert manifest["teacher"]["temperature"] > 0
    assert manifest["training"]["steps"] == 2 and all(np.isfinite(v) for _, v in manifest["training"]["loss_history"])
    assert manifest["promoted"] in ("base", "tuned")
    assert SentenceTransformer(str(tmp_path / "train-kl" / "model"), device="cpu").encode(["x"]).shape == (1, 384)


def test_cli_run_prints_the_guard_verdict(tmp_path: Path, cli) -> None:
    """ingest → chunk → generate (no LLM) → train through the real CLI; harmful training ends with the verdict."""
    job = tmp_path / "job.yaml"
    job.write_text(f"""name: guard
run_dir: {tmp_path / "runs"}
device: cpu
base_model: all-MiniLM-L6-v2
stages:
  ingest: {{sources: [{{path: "builtin:adi"}}]}}
  chunk: {{max_tokens: 256}}
  generate: {{sources: [title, ict, keyword]}}
  train: {{max_steps: 2, batch_size: 16, learning_rate: 0.05, warmup_ratio: 0.0, eval_steps: 2, max_seq_length: 64,
          matryoshka_dims: [384, 96]}}
""")
    proc = cli("run", str(job))
    text = " ".join((proc.stdout + proc.stderr).split())
    verdict = "train: the tuned model is not better than the base model on teacher-agreement nDCG@10 at 384 d"
    assert text.rfind(verdict) > text.rfind("rows out") > 0, text[-3000:]  # printed under the end-of-run table
    assert "the job's model is the base model" in text[text.rfind(verdict):]


# ---------------------------------------------------------------- judged queries as training rows


def test_training_on_judged_queries_fits_them(tmp_path: Path, adi: dict, minilm_path: Path) -> None:
    """Half of ADI's judged queries train (alone: ``query_kinds: []``), the other half validate. The rows are the
    judged (query, abstract) pairs, so a few steps at a high learning rate raise nDCG@10 on the training queries
    themselves (wrong positives would lower it)."""
    from sentence_transformers import SentenceTransformer

    from embedforge.data.beir import load_beir, split_judged

    data = tmp_path / "adi"
    shutil.copytree(BUILTIN_DIR / "adi", data)
    split_judged(data, "test", dev_share=0.5)
    s = spec(tmp_path, learning_rate=1e-4, max_steps=6, eval_steps=6, query_kinds=[], judged_queries=str(data),
             judged_split="test-dev", judged_train_split="test-heldout", judged_train_repeat=2, promote="always",
             matryoshka_dims=[384], precision="fp32", token_weights="none", corpus_rotation="none")
    manifest = run_train(s, adi, tmp_path / "train")
    fit = load_beir(data, "test-heldout")
    pairs = sum(1 for docs in fit.qrels.values() for g in docs.values() if g > 0)
    assert manifest["counts"]["judged_train_rows"] == pairs
    assert manifest["data"]["train_rows"] == 2 * pairs and manifest["data"]["source"] == "queries+judged"

    def fit_ndcg(model_dir: Path) -> float:
        st = SentenceTransformer(str(model_dir), device="cpu")
        st.max_seq_length = 64
        qv = st.encode(fit.query_texts, normalize_embeddings=True)
        dv = st.encode(fit.corpus_texts, normalize_embeddings=True)
        ranked = np.argsort(-(qv @ dv.T), axis=1)[:, :10]
        run = run_from_rankings(fit.query_ids, [[fit.corpus_ids[i] for i in row] for row in ranked])
        return evaluate_run(fit.qrels, run).aggregate["ndcg_at_10"]

    before, after = fit_ndcg(minilm_path), fit_ndcg(tmp_path / "train" / "model")
    assert after > before + 0.03, (before, after)
