"""The real CLI on tiny real data: validate, run, status, skip/re-run, kill-and-resume, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc

from embedforge.data.shards import list_shards, read_table
from embedforge.device import cpu_model

JOB = """# embedforge run job.yaml
name: mini
run_dir: {run_dir}
stages:
  ingest:
    sources: [{{path: {source}}}]
    shard_rows: {shard_rows}
  chunk:
    max_tokens: 64
"""


def _job(tmp_path: Path, source: Path, run_dir: Path, shard_rows: int = 40) -> Path:
    path = tmp_path / f"job-{run_dir.name}.yaml"
    path.write_text(JOB.format(run_dir=run_dir, source=source, shard_rows=shard_rows))
    return path


def _stage_dir(run_dir: Path, stage: str) -> Path:
    (found,) = [p for p in (run_dir / "mini").glob(f"{stage}-*") if (p / "_SUCCESS").exists()]
    return found


def test_validate_reports_errors_clearly(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  chunk:\n    max_tokens: -3\n")
    proc = cli("validate", str(bad), check=False)
    assert proc.returncode == 2
    out = " ".join((proc.stdout + proc.stderr).split())
    assert str(bad) in out and "stages.chunk.max_tokens" in out and "greater than 8" in out


def test_run_status_skip_rerun_and_lineage(cli, tmp_path: Path, adi_dir: Path) -> None:
    run_dir = tmp_path / "runs"
    job = _job(tmp_path, adi_dir, run_dir)
    cli("run", str(job))
    status = json.loads(cli("status", str(job), "--json").stdout)
    assert [(s["stage"], s["state"]) for s in status] == [("ingest", "done"), ("chunk", "done")]
    assert status[0]["rows_out"] == 82
    chunk_dir = _stage_dir(run_dir, "chunk")
    manifest = json.loads((chunk_dir / "manifest.json").read_text())
    assert manifest["inputs"]["ingest"]["hash"] == status[0]["hash"] and manifest["libraries"]["torch"]
    assert manifest["machine"]["cpu_model"] == cpu_model() and manifest["machine"]["cpu_cores"] >= 1
    assert len(list_shards(_stage_dir(run_dir, "ingest"))) == 3  # 82 docs, 40 per shard

    # lineage: every chunk is an exact slice of the document version it names
    docs = {r["doc_version"]: r for r in read_table(_stage_dir(run_dir, "ingest")).to_pylist()}
    chunks = read_table(chunk_dir).to_pylist()
    assert len(chunks) >= 82
    for c in chunks:
        assert docs[c["doc_version"]]["text"][c["start_char"]:c["end_char"]] == c["text"]
        assert c["chunk_id"] == f"{c['doc_version'][:16]}-{c['idx']}" and c["n_tokens"] <= 64

    # a second run skips both stages; a changed chunk field re-runs chunk only
    before = (chunk_dir / "_SUCCESS").stat().st_mtime_ns
    out = cli("run", str(job)).stderr
    assert out.count("skipped") == 2 and (chunk_dir / "_SUCCESS").stat().st_mtime_ns == before
    out = cli("run", str(job), "stages.chunk.max_tokens=32").stderr
    assert "stage ingest: done" in out and "stage chunk: running" in out
    status = json.loads(cli("status", str(job), "--json", "stages.chunk.max_tokens=16").stdout)
    assert [s["state"] for s in status] == ["done", "stale"]  # chunk finished only under other settings


def test_killed_ingest_resumes_without_torn_or_duplicated_rows(tmp_path: Path, cli) -> None:
    corpus = tmp_path / "big.jsonl"
    with open(corpus, "w") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"_id": f"d{i}", "title": f"t{i % 97}", "text": f"document {i} about topic {i % 1013}"}) + "\n")
    reference, killed = tmp_path / "ref", tmp_path / "killed"
    cli("run", str(_job(tmp_path, corpus, reference, 300)), "--stages", "ingest")

    job = _job(tmp_path, corpus, killed, 300)
    proc = subprocess.Popen([sys.executable, "-P", "-m", "embedforge.cli", "run", str(job), "--stages", "ingest"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    shards_dir = next(iter([]), None)
    while time.time() < deadline:
        found = list((killed / "mini").glob("ingest-*/shards/part-*.parquet"))
        if len(found) >= 5:
            shards_dir = found[0].parent
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert shards_dir is not None, "ingest never wrote a shard"
    stage_dir = shards_dir.parent
    assert not (stage_dir / "_SUCCESS").exists(), "the kill came too late to test resume"
    partial = len(list_shards(stage_dir))

    out = cli("run", str(job), "--stages", "ingest").stderr
    assert "resuming" in out
    assert len(list_shards(stage_dir)) == 200 > partial
    got, want = read_table(stage_dir), read_table(_stage_dir(reference, "ingest"))
    assert got.num_rows == want.num_rows == 60_000
    assert pc.count_distinct(got.column("doc_id")).as_py() == 60_000
    assert got.column("doc_version").to_pylist() == want.column("doc_version").to_pylist()
    assert not list(stage_dir.rglob("*.tmp"))
