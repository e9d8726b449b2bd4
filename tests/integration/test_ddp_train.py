"""Data-parallel training on the CPU: the train stage with ``nproc: 2`` (torchrun, gloo) against one process with
the doubled batch. In-batch negatives are gathered across the two processes, so the loss at step 1 must be the
single process's loss with ``2 × batch_size`` rows; the run must finish and save one model.

Inputs: the ADI collection shipped in the package (titles as queries of their own abstracts); the model is the
packaged MiniLM with dropout off (dropout masks differ between one and two processes, nothing else may).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stage_inputs import write_stage_outputs

from embedforge.data.schemas import CHUNKS, QUERIES
from embedforge.runner import run_stage
from embedforge.spec import validate_dict
from embedforge.stages.base import StageOutput

ADI = Path(__file__).resolve().parents[2] / "engine" / "data" / "builtin" / "adi" / "corpus.jsonl"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("ddp_inputs")
    docs = [json.loads(line) for line in ADI.read_text().splitlines()]
    chunks, queries = [], []
    for i, doc in enumerate(docs):
        version = hashlib.sha256((doc["title"] + "\n" + doc["text"]).encode()).hexdigest()
        chunk_id = f"{version[:16]}-0"
        chunks.append({"chunk_id": chunk_id, "doc_id": doc["_id"], "doc_version": version, "idx": 0, "title": "",
                       "text": doc["text"], "start_char": 0, "end_char": len(doc["text"]), "n_tokens": 0})
        queries.append({"query_id": f"q{doc['_id']}", "chunk_id": chunk_id, "doc_id": doc["_id"], "query": doc["title"],
                        "kind": "title", "generator": "adi-titles", "prompt_hash": "", "seed": 0,
                        "split": "val" if i % 8 == 7 else "train"})
    return write_stage_outputs(root, {"chunk": (chunks, CHUNKS), "generate": (queries, QUERIES)})


@pytest.fixture(scope="module")
def model_without_dropout(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    target = tmp_path_factory.mktemp("ddp_model") / "minilm-no-dropout"
    shutil.copytree(minilm_path, target, ignore=shutil.ignore_patterns("onnx", "*.onnx"))
    config = json.loads((target / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return target


def _train(root: Path, inputs: dict, model: Path, **train: object) -> tuple[Path, dict]:
    spec = {"name": "ddp", "run_dir": str(root), "device": "cpu", "seed": 3, "threads": 1,
            "stages": {"train": {"model": str(model), "max_steps": 2, "learning_rate": 1e-4, "eval_steps": 50,
                                 "max_seq_length": 48, "matryoshka_dims": [384, 128], "eval_corpus_max": 40,
                                 "promote": "always", **train}}}
    out = root / "train-out"
    outputs = {n: StageOutput(n, h, Path(d)) for n, (h, d) in inputs.items()}
    outputs["train"] = StageOutput("train", "t", out)
    return out, run_stage(validate_dict(spec), "train", outputs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, inputs: dict, model_without_dropout: Path) -> dict:
    two = _train(tmp_path_factory.mktemp("ddp_two"), inputs, model_without_dropout, nproc=2, batch_size=8)
    one = _train(tmp_path_factory.mktemp("ddp_one"), inputs, model_without_dropout, nproc=1, batch_size=16)
    return {"two": two, "one": one}


def test_two_processes_finish_and_save_one_model(runs: dict) -> None:
    out, manifest = runs["two"]
    assert (out / "_SUCCESS").is_file()
    assert not (out / "ddp").exists(), "the data-parallel scratch (payload, rank 0's candidates) was left behind"
    weights = [p.relative_to(out) for p in out.rglob("model.safetensors") if "checkpoints" not in p.parts]
    assert {p.parts[0] for p in weights} == {"model"}, weights  # one model dir (its WordWeights module has its own)
    assert manifest["training"]["steps"] == 2
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out / "model"), device="cpu").encode(["a title"]).shape == (1, 384)


def test_loss_at_step_one_equals_one_process_with_the_doubled_batch(runs: dict) -> None:
    (_, two), (_, one) = runs["two"], runs["one"]
    step_two, loss_two = two["training"]["loss_history"][0]
    step_one, loss_one = one["training"]["loss_history"][0]
    assert step_two == step_one == 1
    # 16 candidates per query (2 x 8 gathered), not 8: a run without gathering would be ~log(2) lower per dim
    assert loss_two == pytest.approx(loss_one, rel=1e-4, abs=1e-5), (loss_two, loss_one)


@pytest.mark.slow  # a third training run; the single-node tests above cover the default path
def test_two_nodes_on_one_machine_as_docs_gpu_md_says(tmp_path: Path, inputs: dict, model_without_dropout: Path,
                                                       runs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The multi-node commands of docs/gpu.md with two "nodes" on 127.0.0.1, one process each: node 0 is the stage
    (EMBEDFORGE_TORCHRUN_ARGS), node 1 a plain torchrun on the payload node 0 wrote. Effective batch 2 x 8."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rendezvous = f"--nnodes=2 --master-addr=127.0.0.1 --master-port={port}"
    monkeypatch.setenv("EMBEDFORGE_TORCHRUN_ARGS", f"{rendezvous} --node-rank=0")
    payload = tmp_path / "train-out" / "ddp" / "payload.pkl"
    node1: list[subprocess.CompletedProcess] = []

    def second_node() -> None:
        deadline = time.time() + 600
        while not payload.is_file() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # the pickle is written before torchrun starts; let the write finish
        node1.append(subprocess.run([sys.executable, "-P", "-m", "torch.distributed.run", *rendezvous.split(),
                                     "--node-rank=1", "--nproc-per-node=1", "-m", "embedforge.training.distributed",
                                     str(payload)], capture_output=True, text=True, timeout=900,
                                    env={**os.environ, "EMBEDFORGE_TORCHRUN_ARGS": ""}))

    thread = threading.Thread(target=second_node, daemon=True)
    thread.start()
    out, manifest = _train(tmp_path, inputs, model_without_dropout, nproc=1, batch_size=8)
    thread.join(timeout=120)
    assert node1 and node1[0].returncode == 0, node1[0].stderr[-3000:] if node1 else "node 1 never started"
    assert (out / "_SUCCESS").is_file() and (out / "model" / "model.safetensors").is_file()
    step, loss = manifest["training"]["loss_history"][0]
    _, one = runs["one"]
    assert step == 1 and loss == pytest.approx(one["training"]["loss_history"][0][1], rel=1e-4, abs=1e-5)
