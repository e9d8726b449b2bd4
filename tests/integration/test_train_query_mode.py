"""``train.mode: query`` on the built-in ADI corpus: only the query encoder trains, against the start model's
vectors of every abstract; the saved model is a sentence-transformers Router whose document route is the start
model unchanged. Checked: the training queries are fitted, documents encode exactly as before (sentence-transformers
and the project's encoder alike), and evaluate scores queries with the query route.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from stage_inputs import adi_inputs, run_train, spec

from embedforge.data.beir import load_beir, split_judged
from embedforge.data.ingest import BUILTIN_DIR
from embedforge.evaluation.metrics import evaluate_run, run_from_rankings


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """Half of ADI's judged queries train beside the fixture's generated queries, the other half validate."""
    root = tmp_path_factory.mktemp("query_mode")
    data = root / "adi"
    shutil.copytree(BUILTIN_DIR / "adi", data)
    split_judged(data, "test", dev_share=0.5)
    s = spec(root, mode="query", learning_rate=1e-4, max_steps=12, eval_steps=4, batch_size=16,
             judged_queries=str(data), judged_split="test-dev", judged_train_split="test-heldout",
             judged_train_repeat=2, validation="judged", promote="always", matryoshka_dims=[384, 96])
    out = root / "train"
    manifest = run_train(s, adi_inputs(root / "inputs"), out)
    return out / "model", manifest, data


def _ndcg(query_vectors: np.ndarray, doc_vectors: np.ndarray, ds) -> float:
    ranked = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :10]
    run = run_from_rankings(ds.query_ids, [[ds.corpus_ids[i] for i in row] for row in ranked])
    return evaluate_run(ds.qrels, run).aggregate["ndcg_at_10"]


def test_query_mode_saves_a_router_whose_documents_are_the_start_model(trained: tuple, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir, manifest, data = trained
    modules = json.loads((model_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Router"]
    assert set(json.loads((model_dir / "router_config.json").read_text())["structure"]) == {"query", "document"}
    tuned, start = SentenceTransformer(str(model_dir), device="cpu"), SentenceTransformer(str(minilm_path), device="cpu")
    fit = load_beir(data, "test-heldout")
    docs = fit.corpus_texts[:20]
    assert np.abs(tuned.encode_document(docs) - start.encode(docs)).max() < 1e-5  # documents: untouched
    queries = fit.query_texts
    assert np.abs(tuned.encode_query(queries) - start.encode(queries)).max() > 1e-3  # queries: trained
    # the training queries are fitted: searched in ADI's abstracts, their nDCG@10 rises
    doc_vectors = start.encode(fit.corpus_texts, normalize_embeddings=True)
    before = _ndcg(start.encode(queries, normalize_embeddings=True), doc_vectors, fit)
    after = _ndcg(tuned.encode_query(queries, normalize_embeddings=True), doc_vectors, fit)
    assert after > before + 0.03, (before, after)
    assert manifest["promoted"] == "tuned" and manifest["token_weights"]["applied"] is False
    assert "start model's document vectors" in manifest["corpus_rotation"]["reason"]
    history = manifest["training"]["eval_history"]
    assert history[0]["step"] == 0 and len(history) >= 2  # the start model measured first, then every 4 steps
    assert manifest["metrics_before"]["val_judged_ndcg@10_d384"] == pytest.approx(history[0]["val_judged_ndcg@10_d384"])
    card = (model_dir / "README.md").read_text()
    assert "encode_query" in card


def test_the_encoder_runs_each_route(trained: tuple, minilm_path: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import Encoder, get_encoder
    from embedforge.models import model_id, route_model_id, route_modules

    model_dir, _, data = trained
    st = SentenceTransformer(str(model_dir), device="cpu")
    texts = load_beir(data, "test-dev").query_texts[:12]
    for role, reference in (("query", st.encode_query(texts)), ("document", st.encode_document(texts))):
        enc = Encoder(model_dir, role=role, backend="torch")
        assert enc.route == role and enc.pooling == "mean"  # the fast path, not sentence-transformers' forward
        got = enc.encode(texts)
        assert float(np.min(np.sum(got * reference, axis=1))) > 0.9999
    assert Encoder(model_dir, backend="torch").route == "document"  # the model's default route
    # the document route is recorded as the start model: it shares its id (cache, exports, indexes) ...
    assert Encoder(model_dir, role="document").model_id == model_id(minilm_path)
    assert Encoder(model_dir, role="query").model_id not in (model_id(minilm_path), model_id(model_dir))
    assert Encoder(model_dir, role="document").folder_id == model_id(model_dir)  # what reports name the model by
    # ... only while its files are unchanged
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    folder = next(f for kind, f in route_modules(edited, "document") if kind == "Pooling")
    with open(edited / folder / "config.json", "a") as fh:
        fh.write("\n")
    assert route_model_id(edited, "document") not in (model_id(minilm_path), route_model_id(model_dir, "document"))
    plain = get_encoder(minilm_path)  # a single-encoder model: one encoder for both roles
    assert get_encoder(minilm_path, role="query") is plain and plain.route is None
    with pytest.raises(ValueError, match="role must be one of"):
        Encoder(model_dir, role="passage")


def test_evaluate_encodes_queries_with_the_query_route(trained: tuple, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from embedforge.configs.evaluate import EvaluateConfig
    from embedforge.evaluation.harness import ModelRef, evaluate_models

    model_dir, _, data = trained
    ds = load_beir(data, "test-dev")
    cfg = EvaluateConfig(dims=[384], quantizations=["none"], latency=False, score_by="document", cache=False)
    models = [ModelRef("tuned", str(model_dir)), ModelRef("base", str(minilm_path))]
    got = {r["model"]: r["ndcg_at_10"] for r in evaluate_models([ds], models, cfg, device="cpu").rows}
    st = SentenceTransformer(str(model_dir), device="cpu")
    documents = st.encode_document(ds.corpus_texts, normalize_embeddings=True)
    expected = _ndcg(st.encode_query(ds.query_texts, normalize_embeddings=True), documents, ds)
    assert got["tuned"] == pytest.approx(expected, abs=0.005)
    # the base model is the document route on both sides, and the tuned model's score is not that
    assert got["base"] == pytest.approx(_ndcg(st.encode_document(ds.query_texts, normalize_embeddings=True),
                                              documents, ds), abs=0.005)
    assert abs(got["tuned"] - got["base"]) > 1e-4, got


def test_serve_picks_the_encoder_by_input_type(trained: tuple, tmp_path: Path) -> None:
    import httpx
    from sentence_transformers import SentenceTransformer

    from embedforge.serving.loadgen import ServerProcess

    model_dir, _, data = trained
    texts = load_beir(data, "test-dev").query_texts[:5]
    st = SentenceTransformer(str(model_dir), device="cpu")
    with ServerProcess(str(model_dir), ["--threads", "1"], log_path=tmp_path / "server.log") as server:
        def embed(**extra: object) -> np.ndarray:
            reply = httpx.post(f"{server.url}/v1/embeddings", json={"input": texts, **extra}, timeout=60)
            assert reply.status_code == 200, reply.text
            return np.array([item["embedding"] for item in reply.json()["data"]])

        for got, reference in ((embed(input_type="query"), st.encode_query(texts, normalize_embeddings=True)),
                               (embed(input_type="document"), st.encode_document(texts, normalize_embeddings=True)),
                               (embed(), st.encode_document(texts, normalize_embeddings=True))):
            assert float(np.min(np.sum(got * reference, axis=1))) > 0.9999
        assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["input_types"] == ["document", "query"]
        bad = httpx.post(f"{server.url}/v1/embeddings", json={"input": texts, "input_type": "passage"}, timeout=60)
        assert bad.status_code == 400 and "input_type" in bad.text


def test_embed_then_search_use_the_document_and_query_routes(trained: tuple, cli_here, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model_dir, _, data = trained
    env = {"EMBEDFORGE_CACHE": str(tmp_path / "cache"), "EMBEDFORGE_ENCODER_BACKEND": "torch"}
    cli_here("embed", "--model", str(model_dir), "--input", str(data), "--out", str(tmp_path / "out"), env=env)
    query = load_beir(data, "test-dev").query_texts[0]
    out = cli_here("search", str(tmp_path / "out"), query, "--k", "5", "--json", env=env).stdout
    hits = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ds = load_beir(data, "test-dev")
    st = SentenceTransformer(str(model_dir), device="cpu")
    scores = st.encode_document(ds.corpus_texts, normalize_embeddings=True) @ st.encode_query(
        [query], normalize_embeddings=True)[0]
    expected = [ds.corpus_ids[i] for i in np.argsort(-scores)[:5]]
    assert [h["id"] for h in hits] == expected
    # an index the start model built serves the tuned model's queries as it is: the documents did not move
    cli_here("embed", "--model", "all-MiniLM-L6-v2", "--input", str(data), "--out", str(tmp_path / "start"), env=env)
    out = cli_here("search", str(tmp_path / "start"), query, "--k", "5", "--json", "--model", str(model_dir),
                   env=env).stdout
    assert [json.loads(line)["id"] for line in out.splitlines() if line.startswith("{")] == expected
