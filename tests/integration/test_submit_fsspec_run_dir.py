"""``run_dir: file://…`` through the real CLI: separate processes with separate scratch dirs (as separate nodes
would be) share one run directory; stages finished by one are skipped by the next, inputs are pulled, and the
rows equal a run on a plain local path."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from embedforge.data.shards import read_table

JOB = {"name": "shared", "seed": 5,
       "stages": {"ingest": {"sources": [{"path": "builtin:adi"}], "shard_rows": 30}, "chunk": {"max_tokens": 128}}}


def _finished(root: Path, stage: str) -> Path:
    (found,) = [p for p in (root / "shared").glob(f"{stage}-*") if (p / "_SUCCESS").is_file()]
    return found


def test_file_url_run_dir_is_shared_by_processes_with_their_own_scratch(cli, tmp_path: Path) -> None:  # noqa: ANN001
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(JOB))
    storage = tmp_path / "bucket"
    url = f"file://{storage}/runs"

    def node(name: str, *args: str):  # noqa: ANN202
        return cli(*args, str(job), f"run_dir={url}", env={"EMBEDFORGE_SCRATCH": str(tmp_path / name)})

    node("node-a", "run", "--stages", "ingest")
    ingest = _finished(storage / "runs", "ingest")
    names = sorted(p.relative_to(ingest).as_posix() for p in ingest.rglob("*") if p.is_file())
    assert "manifest.json" in names and "shards/part-00000.parquet" in names

    proc = node("node-b", "run")  # skips ingest (finished on the storage), pulls it, runs chunk, pushes chunk
    assert "stage ingest: done" in proc.stderr + proc.stdout and "skipped" in proc.stderr + proc.stdout
    chunk = _finished(storage / "runs", "chunk")
    manifest = json.loads((chunk / "manifest.json").read_text())
    assert manifest["inputs"]["ingest"]["dir"] == f"{url}/shared/{ingest.name}"
    assert (tmp_path / "node-b").is_dir()

    rows = json.loads(node("node-c", "status", "--json").stdout)
    assert [(r["stage"], r["state"]) for r in rows] == [("ingest", "done"), ("chunk", "done")]
    assert rows[1]["dir"] == f"{url}/shared/{chunk.name}"
    assert not (tmp_path / "node-c").exists()  # status reads the storage, it copies nothing

    cli("run", str(job), f"run_dir={tmp_path / 'local'}")
    local = _finished(tmp_path / "local", "chunk")
    assert local.name == chunk.name
    assert read_table(chunk).to_pylist() == read_table(local).to_pylist()
    assert manifest["rows_out"] == json.loads((local / "manifest.json").read_text())["rows_out"]
