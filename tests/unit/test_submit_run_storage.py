"""Run directories on fsspec URLs (``memory://`` here): push order, pull, and the runner on remote storage."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from embedforge.data import run_storage
from embedforge.data.shards import read_table
from embedforge.runner import plan, run_job, status
from embedforge.spec import validate_dict


def _stage_dir(root: Path) -> Path:
    (root / "shards").mkdir(parents=True)
    (root / "shards" / "part-00000.parquet").write_bytes(b"p0")
    (root / "stats").mkdir()
    (root / "stats" / "part-00000.json").write_text("{}")
    (root / "shards" / ".part-00001.parquet.x.tmp").write_bytes(b"torn")
    (root / "manifest.json").write_text('{"stage": "s"}')
    (root / "_SUCCESS").write_text("h\n")
    return root


def test_push_writes_manifest_then_success_last_and_pull_round_trips(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    local = _stage_dir(tmp_path / "s-abc")
    url = f"memory://{tmp_path.name}/runs/job/s-abc"
    fs, _ = run_storage.filesystem(url)
    order: list[str] = []
    put = type(fs).put_file

    def recording_put(self, lpath, rpath, **kwargs):  # noqa: ANN001, ANN202
        order.append(rpath.rsplit("/", 1)[-1])
        return put(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(type(fs), "put_file", recording_put)
    assert run_storage.push(local, url) == 4  # the torn temp file stays behind
    assert order[-2:] == ["manifest.json", "_SUCCESS"] and set(order[:-2]) == {"part-00000.parquet",
                                                                                 "part-00000.json"}
    assert run_storage.exists(run_storage.join(url, "_SUCCESS"))
    assert run_storage.read_json(run_storage.join(url, "manifest.json")) == {"stage": "s"}

    copy = tmp_path / "copy" / "s-abc"
    assert run_storage.pull(url, copy) == 4
    assert (copy / "shards" / "part-00000.parquet").read_bytes() == b"p0" and (copy / "_SUCCESS").is_file()
    assert not list(copy.parent.glob(".*.pull"))

    with pytest.raises(FileNotFoundError, match="not a finished stage"):
        run_storage.pull(f"memory://{tmp_path.name}/runs/job/missing", tmp_path / "m")


def _job(tmp_path: Path, run_dir: str) -> dict:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": f"Doc {i}",
                                          "text": f"Document {i} says something about topic {i}. " * 20}) + "\n"
                              for i in range(12)))
    return {"name": "remote", "run_dir": run_dir,
            "stages": {"ingest": {"sources": [{"path": str(corpus)}], "shard_rows": 5}, "chunk": {"max_tokens": 64}}}


def test_runner_on_a_memory_url_pushes_skips_and_pulls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://{tmp_path.name}/runs"
    spec = validate_dict(_job(tmp_path, url))
    monkeypatch.setenv("EMBEDFORGE_SCRATCH", str(tmp_path / "node-a"))
    first = run_job(spec)
    out = plan(spec)
    assert out["chunk"].url == f"{url}/remote/chunk-{out['chunk'].hash}"
    assert out["chunk"].dir.is_relative_to(tmp_path / "node-a")
    fs, _ = run_storage.filesystem(url)
    for name in ("ingest", "chunk"):
        assert out[name].done and fs.exists(f"/{tmp_path.name}/runs/remote/{name}-{out[name].hash}/_SUCCESS")
        assert out[name].manifest()["rows_out"] == first[name]["rows_out"]
    assert first["chunk"]["inputs"]["ingest"]["dir"] == out["ingest"].url
    expected = read_table(out["chunk"].dir).to_pylist()

    # Another machine: an empty scratch. Finished stages are skipped on the storage's word, nothing is pulled.
    monkeypatch.setenv("EMBEDFORGE_SCRATCH", str(tmp_path / "node-b"))
    again = run_job(spec)
    assert again["chunk"] == first["chunk"] and not (tmp_path / "node-b").exists()
    assert [r["state"] for r in status(spec)] == ["done", "done"]
    assert status(spec)[1]["dir"] == out["chunk"].url

    # Re-running chunk there pulls ingest's output and writes the same rows back to the storage.
    run_job(spec, ["chunk"], force=True)
    b = plan(spec)
    assert (b["ingest"].dir / "_SUCCESS").is_file() and b["ingest"].dir.is_relative_to(tmp_path / "node-b")
    assert read_table(b["chunk"].dir).to_pylist() == expected
    remote_chunk = tmp_path / "node-c-pull"
    run_storage.pull(b["chunk"].url, remote_chunk)
    assert read_table(remote_chunk).to_pylist() == expected


def test_a_finished_stage_whose_push_failed_is_pushed_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://{tmp_path.name}/runs"
    spec = validate_dict(_job(tmp_path, url))
    monkeypatch.setenv("EMBEDFORGE_SCRATCH", str(tmp_path / "node"))
    real_push = run_storage.push

    def failing_push(local: Path, target: str) -> int:
        if "/chunk-" in target:
            raise OSError("network down")
        return real_push(local, target)

    monkeypatch.setattr(run_storage, "push", failing_push)
    with pytest.raises(OSError, match="network down"):
        run_job(spec)
    out = plan(spec)
    assert (out["chunk"].dir / "_SUCCESS").is_file() and not out["chunk"].done
    assert [r["state"] for r in status(spec)] == ["done", "partial"]
    monkeypatch.setattr(run_storage, "push", real_push)
    shard = next((out["chunk"].dir / "shards").glob("*.parquet"))
    before = shard.stat().st_mtime_ns
    run_job(spec)
    assert out["chunk"].done and shard.stat().st_mtime_ns == before  # pushed as it was, not recomputed
    assert fsspec.filesystem("memory").exists(f"/{tmp_path.name}/runs/remote/chunk-{out['chunk'].hash}/manifest.json")


def test_a_failed_stage_pushes_its_shards_and_resumes_on_another_machine(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from embedforge.data.shards import ShardWriter

    url = f"memory://{tmp_path.name}/runs"
    spec = validate_dict(_job(tmp_path, url))
    reference = validate_dict(_job(tmp_path, str(tmp_path / "plain")))
    run_job(reference)
    expected = read_table(plan(reference)["chunk"].dir).to_pylist()

    monkeypatch.setenv("EMBEDFORGE_SCRATCH", str(tmp_path / "node-a"))
    real_write = ShardWriter.write
    written: list[str] = []
    fail = {"on": True}

    def write(self, name, table, **kwargs):  # noqa: ANN001, ANN202
        if fail["on"] and "/chunk-" in str(self.out_dir) and name != "part-00000.parquet":
            raise RuntimeError("node lost")
        written.append(name)
        return real_write(self, name, table, **kwargs)

    monkeypatch.setattr(ShardWriter, "write", write)
    run_job(spec, ["ingest"])
    written.clear()
    with pytest.raises(RuntimeError, match="node lost"):
        run_job(spec)
    out = plan(spec)["chunk"]
    fs, root = run_storage.filesystem(out.url)
    assert fs.exists(f"{root}/shards/part-00000.parquet") and fs.exists(f"{root}/stats/part-00000.json")
    assert not out.done and not fs.exists(f"{root}/manifest.json")

    monkeypatch.setenv("EMBEDFORGE_SCRATCH", str(tmp_path / "node-b"))
    written.clear()
    fail["on"] = False
    run_job(spec)
    assert out.done and "part-00000.parquet" not in written and written  # resumed, not redone
    assert read_table(plan(spec)["chunk"].dir).to_pylist() == expected
    assert out.manifest()["rows_out"] == len(expected)
