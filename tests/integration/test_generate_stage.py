"""The generate stage through the real CLI on ADI: output contract, split, counts, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from embedforge.data.schemas import QUERIES
from embedforge.data.shards import read_table

N_SHARDS = 5


def write_job(path: Path, **generate: object) -> Path:
    spec = {
        "name": "gen", "base_model": "all-MiniLM-L6-v2", "seed": 3,
        "stages": {
            "ingest": {"sources": [{"path": "builtin:adi"}], "shard_rows": 17},  # 82 docs → 5 shards
            "chunk": {"max_tokens": 256},
            "generate": {"backend": "hf", "llm_share": 0.1, "temperature": 0.0, "max_new_tokens": 32,
                         "backend_hf": {"batch_size": 8}, "val_share": 0.2, **generate},
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def stage_dir(run_dir: Path) -> Path:
    [found] = (run_dir / "gen").glob("generate-*")
    return found


@pytest.fixture(scope="module")
def uninterrupted(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("gen-full")
    proc = cli("run", str(write_job(tmp / "job.yaml")), f"run_dir={tmp / 'runs'}", timeout=3600)
    (tmp / "cli.log").write_text(proc.stdout + proc.stderr)  # read by test_log_and_manifest_give_one_throughput
    return stage_dir(tmp / "runs")


def test_output_contract_split_and_counts(uninterrupted: Path) -> None:
    table = read_table(uninterrupted)
    assert table.schema.equals(QUERIES)
    assert len(list((uninterrupted / "shards").glob("*.parquet"))) == N_SHARDS
    rows = table.to_pylist()
    kinds = {r["kind"] for r in rows}
    assert kinds == {"llm", "title", "ict", "keyword"}
    assert len({r["query_id"] for r in rows}) == len(rows)
    assert len({" ".join(r["query"].lower().split()) for r in rows}) == len(rows)
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["doc_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())  # a document is in exactly one split
    assert {s for v in splits.values() for s in v} == {"train", "val"}
    llm = [r for r in rows if r["kind"] == "llm"]
    assert all(r["generator"].startswith("hf:") and r["seed"] == 3 for r in llm)

    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    counts = manifest["counts"]
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["candidates"] == dropped + len(rows)
    assert {f"dropped_{r}" for r in ("length", "verbatim_copy", "exact_duplicate", "near_duplicate",
                                     "roundtrip")} <= set(counts)
    assert counts["dropped_roundtrip"] > 0 and counts["prompts"] >= 4
    assert counts.get("unparseable", 0) == manifest["quarantined"]
    quarantine = [json.loads(line) for line in (uninterrupted / "quarantine.jsonl").read_text().splitlines()]
    assert all(q["reason"] == "unparseable" and "raw" in q for q in quarantine)
    tp = manifest["throughput"]
    assert tp["prompts_per_s"] > 0 and tp["output_tokens_per_s"] > 0 and tp["input_tokens_per_s"] > 0
    assert manifest["generate"]["backend"] == "hf"


def test_log_and_manifest_give_one_throughput(uninterrupted: Path) -> None:
    """The stage's last progress line prints the manifest's output tokens/s (LLM tokens per second of LLM time)."""
    log = (uninterrupted.parents[2] / "cli.log").read_text()
    [last] = [line for line in log.splitlines() if " generate: " in line and "chunks" in line][-1:]
    figure = json.loads((uninterrupted / "manifest.json").read_text())["throughput"]["output_tokens_per_s"]
    assert figure > 0 and last.endswith(f" {figure:,} output tokens/s"), (last, figure)


@pytest.mark.slow  # a second generate run; test_generate_ray resumes a partial run by default
def test_resume_after_sigkill_matches_uninterrupted_run(uninterrupted: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    job = write_job(tmp_path / "job.yaml")
    run_dir = tmp_path / "runs"
    args = [sys.executable, "-P", "-m", "embedforge.cli", "run", str(job), f"run_dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 3600
    try:
        while not list((run_dir / "gen").glob("generate-*/shards/part-00000.parquet")):
            assert proc.poll() is None, "the stage ended before it could be killed"
            assert time.time() < deadline, "no shard written in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = stage_dir(run_dir)
    written = sorted(p.name for p in (out / "shards").glob("*.parquet"))
    assert 1 <= len(written) < N_SHARDS and not (out / "_SUCCESS").exists()

    cli("run", str(job), f"run_dir={run_dir}", timeout=3600)
    assert (out / "_SUCCESS").exists()
    for name in [p.name for p in sorted((uninterrupted / "shards").glob("*.parquet"))]:
        expected = pq.read_table(uninterrupted / "shards" / name).to_pylist()
        assert pq.read_table(out / "shards" / name).to_pylist() == expected, name
    full = json.loads((uninterrupted / "manifest.json").read_text())
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["rows_out"] == full["rows_out"] and resumed["counts"] == full["counts"]
