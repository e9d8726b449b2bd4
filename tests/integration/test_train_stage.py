"""The train stage end to end on ~200 real SciFact training pairs (claims → their cited abstracts).

Inputs are built here as CHUNKS / QUERIES / TRIPLES shards per the schemas (not by the generate/mine code), then
the stage runs through the runner (manifest, _SUCCESS). One run is killed after its first checkpoint and re-run
to check it resumes; the tests then check the model it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from stage_inputs import write_stage_outputs

from embedforge.data.schemas import CHUNKS, QUERIES, TRIPLES
from embedforge.data.shards import shard_name
from embedforge.runner import run_stage
from embedforge.spec import validate_dict
from embedforge.stages.base import StageFailed, StageOutput

N_TRAIN, N_VAL, N_DISTRACTORS = 200, 20, 40

RUN_TRAIN = """
import json, sys
from pathlib import Path
from embedforge.stages.base import StageOutput
from embedforge.runner import run_stage
from embedforge.spec import validate_dict
spec, inputs, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
outputs = {n: StageOutput(n, h, Path(d)) for n, (h, d) in inputs.items()}
outputs["train"] = StageOutput("train", "t", Path(out))
run_stage(validate_dict(spec), "train", outputs)
"""


def _scifact_pairs(root: Path) -> tuple[list[tuple[str, str, str]], dict[str, dict]]:
    """(query id, claim, cited doc id) of the first judged train claims, and the corpus rows by id."""
    corpus = {str(d["_id"]): d for d in map(json.loads, (root / "corpus.jsonl").read_text().splitlines())}
    queries = {str(q["_id"]): q["text"] for q in map(json.loads, (root / "queries.jsonl").read_text().splitlines())}
    pairs, seen = [], set()
    for line in (root / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        if qid in seen or did not in corpus:
            continue
        seen.add(qid)
        pairs.append((qid, queries[qid], did))
    return pairs[: N_TRAIN + N_VAL], corpus


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, scifact_slice: Path) -> dict[str, tuple[str, str]]:
    """chunk, generate and mine outputs (finished stage directories) over SciFact train pairs."""
    root = tmp_path_factory.mktemp("train_inputs")
    pairs, corpus = _scifact_pairs(scifact_slice)
    used = [did for _, _, did in pairs]
    distractors = [d for d in sorted(corpus) if d not in set(used)][:N_DISTRACTORS]
    chunk_of: dict[str, str] = {}
    chunk_rows = []
    for did in dict.fromkeys(used + distractors):
        doc = corpus[did]
        version = hashlib.sha256((doc["title"] + "\n" + doc["text"]).encode()).hexdigest()
        chunk_of[did] = f"{version[:16]}-0"
        chunk_rows.append({"chunk_id": chunk_of[did], "doc_id": did, "doc_version": version, "idx": 0,
                           "title": doc["title"], "text": doc["text"], "start_char": 0, "end_char": len(doc["text"]),
                           "n_tokens": 0})
    query_rows = [{"query_id": qid, "chunk_id": chunk_of[did], "doc_id": did, "query": text, "kind": "llm",
                   "generator": "scifact-claims", "prompt_hash": "", "seed": 0,
                   "split": "train" if i < N_TRAIN else "val"} for i, (qid, text, did) in enumerate(pairs)]
    query_rows.append({**query_rows[0], "query_id": "bad-1", "query": "   "})  # unusable → quarantine
    passages = {r["chunk_id"]: f"{r['title']} {r['text']}" for r in chunk_rows}
    chunk_ids = list(passages)
    triple_rows = []
    for i, q in enumerate(query_rows[:-1]):
        negs = [chunk_ids[(i * 7 + j + 1) % len(chunk_ids)] for j in range(2)]
        negs = [n for n in negs if n != q["chunk_id"]]
        triple_rows.append({"query_id": q["query_id"], "query": q["query"], "pos_chunk_id": q["chunk_id"],
                            "positive": passages[q["chunk_id"]], "neg_chunk_ids": negs,
                            "negatives": [passages[n] for n in negs], "pos_score": 0.5,
                            "neg_scores": [0.4] * len(negs)})
    return write_stage_outputs(root, {"chunk": (chunk_rows, CHUNKS), "generate": (query_rows, QUERIES),
                                      "mine": (triple_rows, TRIPLES)})


def _spec(run_dir: Path, **train: object) -> dict:
    base = {"max_steps": 6, "batch_size": 16, "learning_rate": 1e-4, "eval_steps": 2, "max_seq_length": 32,
            "matryoshka_dims": [384, 128], "save_total_limit": 3, "eval_corpus_max": 80,
            "promote": "always"}  # these tests check the training itself; the guard has test_train_guard.py
    return {"name": "t", "run_dir": str(run_dir), "device": "cpu", "seed": 7,
            "stages": {"train": {**base, **train}}}


def _run(spec: dict, inputs: dict[str, tuple[str, str]], out: Path, use: tuple[str, ...] = ("chunk", "generate")) -> dict:
    outputs = {n: StageOutput(n, h, Path(d)) for n, (h, d) in inputs.items() if n in use}
    outputs["train"] = StageOutput("train", "t", out)
    return run_stage(validate_dict(spec), "train", outputs)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory, inputs: dict) -> tuple[Path, dict, int]:
    """A run killed (SIGKILL) after its first checkpoint, then re-run: (stage dir, manifest, killed at step)."""
    root = tmp_path_factory.mktemp("train_run")
    out = root / "train-t"
    spec = _spec(root)
    use = {k: v for k, v in inputs.items() if k in ("chunk", "generate")}
    env = {**os.environ, "EMBEDFORGE_DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", RUN_TRAIN, json.dumps(spec), json.dumps(use), str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    first = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 240
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.is_file(), f"no checkpoint before the kill: {proc.stderr.read().decode()[-3000:] if proc.poll() is not None else 'timeout'}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "_SUCCESS").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")
                    if (p / "trainer_state.json").is_file())
    manifest = _run(spec, inputs, out)
    return out, manifest, killed_at


def test_resume_continues_the_step_count(killed_and_resumed: tuple[Path, dict, int]) -> None:
    out, manifest, killed_at = killed_and_resumed
    training = manifest["training"]
    assert killed_at < 6
    assert training["resumed_from"].endswith(f"checkpoint-{killed_at}")
    assert training["steps"] == 6
    logged = [step for step, _ in training["loss_history"]]
    assert logged and min(logged) == killed_at + 1 and max(logged) == 6  # no step repeated after the resume
    assert (out / "_SUCCESS").is_file()


def test_output_loads_encodes_and_loss_decreased(killed_and_resumed: tuple[Path, dict, int], inputs: dict,
                                                 st_model) -> None:
    from sentence_transformers import SentenceTransformer

    out, manifest, _ = killed_and_resumed
    model_dir = out / "model"
    for name in ("model.safetensors", "tokenizer.json", "modules.json", "README.md"):
        assert (model_dir / name).is_file(), name
    assert not list(out.glob(".model*")), "temp dirs of the atomic save left behind"
    trained = SentenceTransformer(str(model_dir), device="cpu")
    assert trained.max_seq_length == st_model.max_seq_length  # training truncation is not saved

    q = pq.read_table(Path(inputs["generate"][1]) / "shards" / shard_name(0)).to_pylist()[:N_TRAIN]
    chunks = {r["chunk_id"]: f"{r['title']} {r['text']}" for r in
              pq.read_table(Path(inputs["chunk"][1]) / "shards" / shard_name(0)).to_pylist()}
    anchors, positives = [r["query"] for r in q], [chunks[r["chunk_id"]] for r in q]

    def mnrl(model) -> float:  # in-batch-negatives loss over all training rows, scale 20
        model.max_seq_length = 32
        a = model.encode(anchors, normalize_embeddings=True)
        p = model.encode(positives, normalize_embeddings=True)
        s = 20 * a @ p.T
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - np.diag(s)))

    original = st_model.max_seq_length
    try:
        before, after = mnrl(st_model), mnrl(trained)
    finally:
        st_model.max_seq_length = original
    assert after < before - 0.01, (before, after)
    assert trained.encode(["a claim about cells"]).shape == (1, 384)
    per_dim = manifest["metrics_per_dim"]
    assert set(per_dim) == {"384", "128"}
    assert all(0 <= v["ndcg@10_after"] <= 1 and 0 <= v["ndcg@10_before"] <= 1 for v in per_dim.values())
    assert manifest["quarantined"] == 1 and manifest["data"]["train_rows"] == N_TRAIN
    assert manifest["data"]["val_queries"] == N_VAL


def test_model_card_has_lineage_and_metrics(killed_and_resumed: tuple[Path, dict, int]) -> None:
    out, manifest, _ = killed_and_resumed
    card = (out / "model" / "README.md").read_text()
    assert manifest["spec_hash"] in card
    assert "generatehash" in card and "chunkhash" in card and "part-00000.parquet" in card
    assert "| 384 |" in card and "| 128 |" in card
    assert '"learning_rate": 0.0001' in card
    meta = yaml.safe_load(card.split("---")[1])  # sentence-transformers' own card metadata
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {r["dataset"]["type"].rsplit("_", 1)[-1] for r in meta["model-index"][0]["results"]} == {"384", "128"}
    assert str(out.parent) not in card  # lineage names stages and files, not this machine's paths
    assert (out / "model" / "onnx" / "model.onnx").is_file()
    config = json.loads((out / "model" / "config_sentence_transformers.json").read_text())
    assert config["matryoshka_dims"][0] == 384


def test_adapter_mode_trains_and_loads(tmp_path: Path, inputs: dict, encoder) -> None:
    from sentence_transformers import SentenceTransformer

    spec = _spec(tmp_path, mode="adapter", adapter_kind="two_layer", adapter_epochs=6, batch_size=32,
                 keep_best=False)
    manifest = _run(spec, inputs, tmp_path / "train-a")
    training = manifest["training"]
    losses = [loss for _, loss in training["loss_history"]]
    assert losses[-1] < losses[0]
    assert training["best"] == "epoch 6"  # keep_best off: the last epoch
    evals = training["eval_history"]
    assert len(evals) == 7 and manifest["metrics_per_dim"]["128"]["ndcg@10_after"] == evals[-1]["val_ndcg@10_d128"]
    model_dir = tmp_path / "train-a" / "model"
    modules = json.loads((model_dir / "modules.json").read_text())
    # the adapter's two layers, then the corpus rotation of what they output
    assert [m["type"].rsplit(".", 1)[-1] for m in modules][-4:] == ["Dense", "Dense", "Dense", "Normalize"]
    model = SentenceTransformer(str(model_dir), device="cpu", trust_remote_code=False)
    texts = ["Vitamin D deficiency is linked to bone loss.", "A passage about mitochondria."]
    vectors = model.encode(texts, normalize_embeddings=False)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    base = encoder.encode(texts)
    assert not np.allclose(vectors, base, atol=1e-3), "the adapter did not change the embeddings"


@pytest.mark.slow  # 2 steps, but CachedMNRL + gradient checkpointing + 8-bit AdamW are slow on a shared CPU
def test_triples_with_cached_mnrl_lora_8bit_and_checkpointing(tmp_path: Path, inputs: dict) -> None:
    from sentence_transformers import SentenceTransformer

    spec = _spec(tmp_path, mode="lora", loss="cached_mnrl", mini_batch_size=8, optimizer="adamw_8bit",
                 gradient_checkpointing=True, max_steps=2, eval_steps=2, max_negatives=2)
    manifest = _run(spec, inputs, tmp_path / "train-l", use=("chunk", "generate", "mine"))
    assert manifest["data"]["source"] == "triples" and manifest["data"]["negatives"] == 2
    assert manifest["lora_layers_merged"] > 0 and manifest["training"]["steps"] == 2
    model_dir = tmp_path / "train-l" / "model"
    assert (model_dir / "model.safetensors").is_file() and not (model_dir / "adapter_config.json").exists()
    assert SentenceTransformer(str(model_dir), device="cpu").encode(["x"]).shape == (1, 384)


def test_gpu_only_and_impossible_options_are_refused(tmp_path: Path, inputs: dict) -> None:
    with pytest.raises(StageFailed, match=r"fp16.*CUDA"):
        _run(_spec(tmp_path, precision="fp16"), inputs, tmp_path / "train-f")
    with pytest.raises(StageFailed, match=r"train\.matryoshka_dims.*\[512\].*384"):
        _run(_spec(tmp_path, matryoshka_dims=[512, 256]), inputs, tmp_path / "train-d")
    with pytest.raises(StageFailed, match=r"train\.model: 'extend_vocab'"):
        _run(_spec(tmp_path, model="extend_vocab"), inputs, tmp_path / "train-m")
    with pytest.raises(StageFailed, match=r"triplet.*hard negatives"):
        _run(_spec(tmp_path, loss="triplet"), inputs, tmp_path / "train-t")
