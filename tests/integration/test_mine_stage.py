"""The ``mine`` stage end to end on ADI: real chunks, real MiniLM, queries with several known positives each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from embedforge.data.schemas import QUERIES, TRIPLES
from embedforge.data.shards import list_shards, read_table, shard_name, write_parquet
from embedforge.device import cpu_bf16_dot
from embedforge.mining.corpus import normalize_text
from embedforge.runner import plan, run_job
from embedforge.search.index import auto_backend
from embedforge.spec import SpecError, validate_dict
from embedforge.stages.base import StageFailed

ADI = Path(__file__).resolve().parents[2] / "engine" / "data" / "builtin" / "adi"
SHARD_ROWS = 16


def _job(run_dir: Path, mine: dict | None = None) -> dict:
    stages: dict = {"ingest": {"sources": [{"path": "builtin:adi"}]}, "chunk": {"max_tokens": 128}}
    if mine is not None:
        stages["mine"] = mine
    return {"name": "minetest", "run_dir": str(run_dir), "device": "cpu", "seed": 7, "stages": stages}


def _write_queries(directory: Path, rows: list[dict]) -> Path:
    for i in range(0, max(len(rows), 1), SHARD_ROWS):
        table = pa.Table.from_pylist(rows[i:i + SHARD_ROWS], schema=QUERIES)
        write_parquet(directory / "shards" / shard_name(i // SHARD_ROWS), table)
    return directory


@pytest.fixture(scope="module")
def adi(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ADI chunked, plus QUERIES shards: the 35 judged queries (one row per relevant document, so most queries
    have several known positives), first-sentence queries of chunks, two bad rows and a val split."""
    root = tmp_path_factory.mktemp("mine")
    job = validate_dict(_job(root / "runs"))
    run_job(job)
    chunk_dir = plan(job)["chunk"].dir
    chunks = read_table(chunk_dir).to_pylist()
    first = {c["doc_id"]: c["chunk_id"] for c in chunks if c["idx"] == 0}
    texts = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(ADI / "queries.jsonl")}
    base = {"kind": "llm", "generator": "test", "prompt_hash": "", "seed": 0}
    rows = []
    for line in list(open(ADI / "qrels" / "test.tsv"))[1:]:
        q, d, _ = line.split()
        rows.append({**base, "query_id": f"adi{q}-{d}", "chunk_id": first[d], "doc_id": d, "query": texts[q],
                     "split": "val" if int(q) % 7 == 0 else "train"})
    for c in chunks[:60]:
        sentence = c["text"].split(". ")[0][:200]
        rows.append({**base, "kind": "ict", "query_id": f"ict-{c['chunk_id']}", "chunk_id": c["chunk_id"],
                     "doc_id": c["doc_id"], "query": sentence, "split": "train"})
    rows.append({**base, "query_id": "bad-chunk", "chunk_id": "no-such-chunk", "doc_id": "x", "query": "what",
                 "split": "train"})
    rows.append({**base, "query_id": "bad-empty", "chunk_id": chunks[0]["chunk_id"], "doc_id": "x", "query": " ?! ",
                 "split": "train"})
    queries = _write_queries(root / "queries", rows)
    return {"root": root, "queries": queries, "rows": rows, "chunks": {c["chunk_id"]: c for c in chunks}}


MINE = {"num_negatives": 4, "range_max": 30, "query_block": 24}


@pytest.fixture(scope="module")
def mined(adi: dict) -> dict:
    job = validate_dict(_job(adi["root"] / "runs", {**MINE, "queries_path": str(adi["queries"])}))
    manifest = run_job(job)["mine"]
    return {"manifest": manifest, "dir": plan(job)["mine"].dir, "job": job}


def test_triples_obey_every_rule_on_real_data(adi: dict, mined: dict, encoder) -> None:
    table = read_table(mined["dir"])
    assert table.schema.equals(TRIPLES)
    rows = adi["rows"]
    train_ok = [r for r in rows if r["split"] == "train" and not r["query_id"].startswith("bad")]
    assert table.num_rows == len(train_ok)
    assert sorted(table.column("query_id").to_pylist()) == sorted(r["query_id"] for r in train_ok)
    positives: dict[str, set[str]] = {}
    for r in rows:
        positives.setdefault(normalize_text(r["query"]), set()).add(r["chunk_id"])
    docs = {cid: c["doc_id"] for cid, c in adi["chunks"].items()}
    multi = 0
    for t in table.to_pylist():
        known = positives[normalize_text(t["query"])]
        multi += len(known) > 1
        assert not known & set(t["neg_chunk_ids"]), "a known positive was mined as a negative"
        assert not {docs[c] for c in known} & {docs[c] for c in t["neg_chunk_ids"]}
        assert len(t["negatives"]) == len(t["neg_chunk_ids"]) == len(t["neg_scores"]) <= 4
        assert t["neg_scores"] == sorted(t["neg_scores"], reverse=True)
        assert len(set(t["neg_chunk_ids"])) == len(t["neg_chunk_ids"])
        if t["neg_scores"]:
            assert max(t["neg_scores"]) < 0.95 * t["pos_score"] + 1e-6
    assert multi > 50  # the judged queries really have several known positives
    sample = table.slice(0, 8).to_pylist()
    q = encoder.encode([t["query"] for t in sample])
    p = encoder.encode([t["positive"] for t in sample])
    assert np.allclose((q * p).sum(1), [t["pos_score"] for t in sample], atol=1e-4)


def test_manifest_quarantine_and_plot(adi: dict, mined: dict) -> None:
    m = mined["manifest"]
    n_val = sum(r["split"] == "val" for r in adi["rows"])
    assert m["counts"]["rows_other_split"] == n_val > 0
    assert m["quarantined"] == 2
    reasons = {json.loads(line)["reason"] for line in (mined["dir"] / "quarantine.jsonl").read_text().splitlines()}
    assert reasons == {"empty query", "chunk_id not in the chunk corpus"}
    mining = m["mining"]
    assert mining["positive_scores"]["count"] == m["rows_out"]
    assert mining["positive_scores"]["mean"] > mining["negative_scores"]["mean"]
    assert mining["removed_share"]["relative_margin"] > 0 and "same_doc" in mining["removed_share"]
    assert m["search"]["backend"] == auto_backend("flat")  # faiss-cpu, or torch on CPUs with native bf16 dots
    assert m["search"]["bf16_candidates"] == (m["search"]["backend"] == "torch" and cpu_bf16_dot())
    assert m["search"]["corpus_chunks"] == len(adi["chunks"])
    assert (mined["dir"] / "mine_scores.png").read_bytes()[:4] == b"\x89PNG"
    vectors = np.load(mined["dir"] / "corpus_vectors.npy", mmap_mode="r")
    assert vectors.shape == (len(adi["chunks"]), 384)


def _copy_upstream(src, dest, keep_vectors_of: Path | None = None) -> Path:
    """Copy the finished ingest and chunk outputs of job ``src`` (and optionally mine corpus vectors) to job ``dest``."""
    for stage in ("ingest", "chunk"):
        shutil.copytree(plan(src)[stage].dir, plan(dest)[stage].dir)
    out = plan(dest)["mine"].dir
    if keep_vectors_of is not None:
        out.mkdir(parents=True)
        for name in ("corpus_vectors.npy", "corpus_vectors.json"):
            shutil.copy(keep_vectors_of / name, out / name)
    return out


def test_torch_backend_writes_identical_triples(adi: dict, mined: dict, tmp_path: Path) -> None:
    spec = _job(tmp_path / "runs", {**MINE, "queries_path": str(adi["queries"]), "backend": "torch"})
    job = validate_dict(spec)
    out = _copy_upstream(mined["job"], job, keep_vectors_of=mined["dir"])  # same corpus vectors, reused
    manifest = run_job(job)["mine"]
    assert manifest["search"]["backend"] == "torch"
    assert read_table(out).equals(read_table(mined["dir"]))


def test_resume_after_kill(adi: dict, mined: dict, tmp_path: Path) -> None:
    """SIGKILL the real CLI after its first triples shard; the re-run completes the rest without duplicates."""
    spec = _job(tmp_path / "runs", {**MINE, "queries_path": str(adi["queries"])})
    _copy_upstream(mined["job"], validate_dict(spec))
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    out = plan(validate_dict(spec))["mine"].dir
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "embedforge.cli", "run", str(job_file)], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list_shards(out / "shards"):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_total = len(list_shards(adi["queries"]))
    done_before = {p.name: p.read_bytes() for p in list_shards(out / "shards")}
    assert not (out / "_SUCCESS").exists() and 0 < len(done_before) < n_total, "the kill did not land mid-stage"
    subprocess.run([sys.executable, "-P", "-m", "embedforge.cli", "run", str(job_file)], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=900)
    assert (out / "_SUCCESS").exists()
    for name, data in done_before.items():  # finished shards were kept, not redone
        assert (out / "shards" / name).read_bytes() == data
    resumed = read_table(out)
    assert len(set(resumed.column("query_id").to_pylist())) == resumed.num_rows
    assert resumed.equals(read_table(mined["dir"]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mining"]["counts"] == mined["manifest"]["mining"]["counts"]


def test_clear_errors_for_missing_and_empty_queries(adi: dict, tmp_path: Path) -> None:
    job = validate_dict(_job(adi["root"] / "runs", {"queries_path": str(tmp_path / "nope")}))
    with pytest.raises(SpecError, match="stages.mine.queries_path: .*nope' not found"):  # before any stage runs
        run_job(job, stages=["mine"])
    empty = _write_queries(tmp_path / "empty", [])
    job = validate_dict(_job(adi["root"] / "runs", {"queries_path": str(empty)}))
    with pytest.raises(StageFailed, match="no rows"):
        run_job(job, stages=["mine"])
    no_split = tmp_path / "nosplit" / "shards" / shard_name(0)
    write_parquet(no_split, pa.table({"query_id": ["a"], "chunk_id": ["b"], "query": ["c"]}))
    job = validate_dict(_job(adi["root"] / "runs", {"queries_path": str(no_split.parent.parent)}))
    with pytest.raises(StageFailed, match=r"lacks the QUERIES columns \['split'\]"):
        run_job(job, stages=["mine"])
    job = validate_dict(_job(adi["root"] / "runs", {}))
    with pytest.raises(StageFailed, match="generate"):
        run_job(job, stages=["mine"])


def test_cross_encoder_rescoring(adi: dict, tmp_path: Path) -> None:
    """A real (randomly initialized head) CrossEncoder built offline from MiniLM rescores candidates."""
    import torch
    from sentence_transformers import CrossEncoder

    from embedforge.models import resolve_model

    torch.manual_seed(0)
    ce_dir = tmp_path / "ce"
    CrossEncoder(str(resolve_model("all-MiniLM-L6-v2")), num_labels=1, device="cpu").save_pretrained(str(ce_dir))
    few = [r for r in adi["rows"] if r["query_id"].startswith("ict-")][:6]
    queries = _write_queries(tmp_path / "q", few)
    mine = {"queries_path": str(queries), "cross_encoder": str(ce_dir), "num_negatives": 2, "range_max": 6,
            "relative_margin": None}
    job = validate_dict(_job(adi["root"] / "runs", mine))
    manifest = run_job(job, stages=["mine"])["mine"]
    table = read_table(plan(job)["mine"].dir).to_pylist()
    assert len(table) == 6 and manifest["counts"]["rows_mined"] == 6
    ce = CrossEncoder(str(ce_dir), device="cpu")
    t = table[0]
    want = ce.predict([(t["query"], t["positive"])] + [(t["query"], n) for n in t["negatives"]])
    assert np.allclose([t["pos_score"], *t["neg_scores"]], want, atol=1e-4)
    bad = validate_dict(_job(adi["root"] / "runs", {**mine, "cross_encoder": str(tmp_path / "missing")}))
    with pytest.raises(SpecError, match="stages.mine.cross_encoder"):  # the job's preflight, before any stage
        run_job(bad, stages=["mine"])


def test_query_shards_are_parquet(adi: dict) -> None:
    assert pq.read_schema(list_shards(adi["queries"])[0]).equals(QUERIES)


def test_too_few_negatives_quarantine(adi: dict, mined: dict, tmp_path: Path) -> None:
    few = [r for r in adi["rows"] if r["query_id"].startswith("ict-")][:6]
    queries = _write_queries(tmp_path / "q", few)
    mine = {"queries_path": str(queries), "num_negatives": 3, "range_max": 10, "max_score": -1.0,
            "relative_margin": None, "too_few_negatives": "quarantine"}
    job = validate_dict(_job(adi["root"] / "runs", mine))
    out = plan(job)["mine"].dir
    out.mkdir(parents=True)
    for name in ("corpus_vectors.npy", "corpus_vectors.json"):  # reuse the corpus vectors
        shutil.copy(mined["dir"] / name, out / name)
    manifest = run_job(job, stages=["mine"])["mine"]
    assert manifest["rows_out"] == 0 and manifest["quarantined"] == 6
    assert manifest["counts"]["queries_short"] == manifest["counts"]["queries_without_negatives"] == 6
    assert manifest["mining"]["removed_share"]["max_score"] > 0.8
    lines = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert {x["reason"] for x in lines} == {"fewer than 3 negatives passed the rules"}
