"""A saved model directory opens in the ecosystem's tools: sentence-transformers' own model card with a
model-index per Matryoshka dimension and no machine paths, Matryoshka dims and prompts in
config_sentence_transformers.json, and onnx/model.onnx where Optimum's ORT loader looks for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from embedforge.training.model_files import finish_model_dir, portable

METRICS = {"val_ndcg@10_d384": 0.7123, "val_recall@10_d384": 0.9, "val_mrr@10_d384": 0.65,
           "val_ndcg@10_d96": 0.6512, "val_recall@10_d96": 0.85, "val_mrr@10_d96": 0.6}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    target = tmp_path_factory.mktemp("model") / "model"
    shutil.copytree(minilm_path, target)
    lineage = f"## Lineage\n\n- chunks from `{target.parent}/runs/job/chunk-abc123` (hash `abc123`)\n"
    finish_model_dir(target, title="domain-model", base_model="sentence-transformers/all-MiniLM-L6-v2",
                     dims=[384, 96], metrics=METRICS, extra_markdown=lineage, prompts={"query": "query: "})
    return target


def test_card_is_sentence_transformers_own_with_a_model_index_per_dim(model_dir: Path) -> None:
    text = (model_dir / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["library_name"] == "sentence-transformers"
    assert meta["language"] == ["en"] and "matryoshka" in meta["tags"]
    assert meta["license"] == "apache-2.0"  # the start model's card declares it; a derivative carries it on
    results = meta["model-index"][0]["results"]
    by_dim = {r["dataset"]["type"].rsplit("_", 1)[-1]: {m["type"]: m["value"] for m in r["metrics"]} for r in results}
    assert by_dim == {"384": {"cosine_ndcg@10": 0.7123, "cosine_recall@10": 0.9, "cosine_mrr@10": 0.65},
                      "96": {"cosine_ndcg@10": 0.6512, "cosine_recall@10": 0.85, "cosine_mrr@10": 0.6}}
    assert "## Lineage" in text and "`chunk-abc123`" in text
    assert str(model_dir.parent) not in text and "/tmp/" not in text


def test_config_declares_matryoshka_dims_and_prompts(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    config = json.loads((model_dir / "config_sentence_transformers.json").read_text())
    assert config["matryoshka_dims"] == [384, 96] and config["prompts"] == {"query": "query: "}
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.prompts["query"] == "query: "


def test_onnx_export_matches_the_torch_model(model_dir: Path, st_model) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    path = model_dir / "onnx" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]  # what ORTModelForFeatureExtraction reads
    texts = ["Matryoshka embeddings truncate well.", "A short one", "Domain tuning of a small encoder on CPU cores."]
    enc = AutoTokenizer.from_pretrained(str(model_dir))(texts, padding=True, return_tensors="np")
    hidden = session.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    mask = enc["attention_mask"][..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    reference = st_model.encode(texts, normalize_embeddings=True)
    assert np.min(np.sum(pooled * reference, axis=1)) > 0.9999


def test_portable_keeps_names_drops_machine_paths() -> None:
    assert portable("from `/home/me/runs/job/chunk-1` and /tmp/x/y.parquet, hash `ab`") == \
        "from `chunk-1` and y.parquet, hash `ab`"
    assert portable("see https://huggingface.co/org/name and a/b/c") == "see https://huggingface.co/org/name and a/b/c"


def test_push_dry_run_lists_the_model_files(cli, model_dir: Path) -> None:
    (model_dir / "checkpoint-5").mkdir(exist_ok=True)
    (model_dir / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")
    proc = cli("push", str(model_dir), "me/domain-model", "--dry-run")
    listed = [line.split()[-1] for line in proc.stdout.splitlines()[:-1]]
    assert {"README.md", "model.safetensors", "onnx/model.onnx", "config_sentence_transformers.json"} <= set(listed)
    assert not any(name.startswith("checkpoint-") for name in listed)
    assert proc.stdout.splitlines()[-1].startswith(f"would upload {len(listed)} files")
    assert "https://huggingface.co/me/domain-model (private)" in proc.stdout
    bad = cli("push", str(model_dir / "onnx"), "me/x", "--dry-run", check=False)
    assert bad.returncode == 2 and "not a sentence-transformers model directory" in bad.stdout + bad.stderr


def test_card_of_a_model_with_token_weights_stays_small(tmp_path: Path, minilm_path: Path) -> None:
    """sentence-transformers would print the whole WordWeights vocabulary into the architecture block."""
    from embedforge.training.token_weights import weight_saved_model

    shutil.copytree(minilm_path, tmp_path / "m")
    weight_saved_model(tmp_path / "m", ["a passage about boundary layers", "a passage about aspirin"], floor=0.5,
                       power=0.5)
    finish_model_dir(tmp_path / "m", title="weighted", base_model=None, dims=[384], metrics=METRICS,
                     extra_markdown="", onnx=False)
    text = (tmp_path / "m" / "README.md").read_text()
    assert "WordWeights(per-token weights: the WordWeights module folder)" in text
    assert len(text) < 50_000 and max(len(line) for line in text.splitlines()) < 1000
