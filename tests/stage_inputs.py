"""Upstream stage outputs written straight from rows, for tests that run one stage (train) on its own."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa

from embedforge.data.ingest import BUILTIN_DIR
from embedforge.data.schemas import CHUNKS, QUERIES
from embedforge.data.shards import ShardWriter, shard_name
from embedforge.runner import run_stage
from embedforge.spec import validate_dict
from embedforge.stages.base import StageOutput


def write_stage_outputs(root: Path, tables: dict[str, tuple[list[dict], pa.Schema]]) -> dict[str, tuple[str, str]]:
    """One finished shard directory per stage (``<root>/<stage>-fixture`` with ``_SUCCESS``); returns
    ``{stage: (hash, directory)}``, the form the tests turn into ``StageOutput`` objects."""
    out = {}
    for name, (rows, schema) in tables.items():
        d = root / f"{name}-fixture"
        ShardWriter(d).write(shard_name(0), pa.Table.from_pylist(rows, schema=schema))
        (d / "_SUCCESS").write_text("fixture\n")
        out[name] = (f"{name}hash", str(d))
    return out


def adi_inputs(root: Path) -> dict[str, tuple[str, str]]:
    """chunk and generate outputs over the ADI abstracts: one chunk per abstract, two queries each."""
    docs = [json.loads(line) for line in (BUILTIN_DIR / "adi" / "corpus.jsonl").read_text().splitlines()]
    chunk_rows, query_rows = [], []
    for i, doc in enumerate(docs):
        version = hashlib.sha256((doc["title"] + "\n" + doc["text"]).encode()).hexdigest()
        cid = f"{version[:16]}-0"
        chunk_rows.append({"chunk_id": cid, "doc_id": doc["_id"], "doc_version": version, "idx": 0,
                           "title": doc["title"], "text": doc["text"], "start_char": 0, "end_char": len(doc["text"]),
                           "n_tokens": 0})
        sentences = [s.strip() for s in re.split(r"(?<=[.;])\s+", doc["text"]) if len(s.split()) >= 5]
        split = "val" if i % 5 == 0 else "train"
        words = [w for w in re.findall(r"[a-z]{5,}", doc["text"].lower())][1::4][:3]
        for kind, text in (("title", doc["title"]), ("ict", max(sentences or [doc["text"]], key=len)),
                           ("keyword", " ".join(words))):
            query_rows.append({"query_id": f"{doc['_id']}-{kind}", "chunk_id": cid, "doc_id": doc["_id"],
                               "query": text, "kind": kind, "generator": "fixture", "prompt_hash": "", "seed": 0,
                               "split": split})
    return write_stage_outputs(root, {"chunk": (chunk_rows, CHUNKS), "generate": (query_rows, QUERIES)})


def spec(run_dir: Path, **train: object) -> dict:
    base = {"max_steps": 4, "batch_size": 16, "learning_rate": 5e-5, "eval_steps": 2, "max_seq_length": 64,
            "matryoshka_dims": [384, 96], "save_total_limit": 2, "warmup_ratio": 0.0}
    return {"name": "adi", "run_dir": str(run_dir), "device": "cpu", "seed": 3,
            "stages": {"train": {**base, **train}}}


def run_train(spec: dict, inputs: dict[str, tuple[str, str]], out: Path) -> dict:
    outputs = {n: StageOutput(n, h, Path(d)) for n, (h, d) in inputs.items()}
    outputs["train"] = StageOutput("train", "t", out)
    return run_stage(validate_dict(spec), "train", outputs)
