"""Sharded datasets: atomic writes, resume bookkeeping, streaming reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedforge.data import shards
from embedforge.data.shards import ShardWriter, count_rows, iter_batches, list_shards, read_table, shard_name


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(start, start + n)], "x": list(range(start, start + n))})


def test_writer_counts_and_quarantine(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path)
    w.write(shard_name(0), _table(5), stats={"rows_in": 6}, quarantine=[{"source": "f:3", "reason": "empty"}])
    w.write(shard_name(1), _table(4, 5), stats={"rows_in": 4})
    assert w.done(shard_name(0)) and not w.done(shard_name(2))
    assert count_rows(tmp_path) == 9
    totals = w.totals()
    assert totals["rows_in"] == 10 and totals["rows_out"] == 9 and totals["quarantined"] == 1
    assert w.merge_quarantine() == 1
    assert '"reason": "empty"' in (tmp_path / "quarantine.jsonl").read_text()
    assert read_table(tmp_path).column("x").to_pylist() == list(range(9))
    assert sum(b.num_rows for b in iter_batches(tmp_path, batch_rows=2)) == 9


def test_failed_write_leaves_no_partial_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pq.write_table

    def torn(table: pa.Table, where: str, **kw: object) -> None:
        real(table.slice(0, 1), where, **kw)  # something is on disk under the temp name...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(shards.pq, "write_table", torn)
    w = ShardWriter(tmp_path)
    with pytest.raises(OSError):
        w.write(shard_name(0), _table(10))
    assert not w.done(shard_name(0))
    assert list_shards(tmp_path) == []
    assert not [p for p in (tmp_path / "shards").iterdir()], "temp file left behind"


def test_stale_temp_files_are_cleaned_on_resume(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / ".part-00000.parquet.abc.tmp").write_bytes(b"torn")
    ShardWriter(tmp_path)
    assert list((tmp_path / "shards").iterdir()) == []


def test_remove_stale_temps_reaches_every_subdirectory(tmp_path: Path) -> None:
    keep = [tmp_path / "shards" / shard_name(0), tmp_path / "model" / "config.json", tmp_path / ".hidden"]
    stale = [tmp_path / "dims" / "d128" / "shards" / ".part-00000.parquet.x1.tmp",
             tmp_path / "index" / "d384-flat" / ".ids.parquet.tmp", tmp_path / ".model.tmp" / "model.safetensors",
             tmp_path / ".model.old" / "config.json"]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    removed = shards.remove_stale_temps(tmp_path)
    assert all(p.exists() for p in keep)
    assert not any(p.exists() for p in stale) and not (tmp_path / ".model.tmp").exists()
    assert len(removed) == 4


def test_runner_removes_temps_of_a_killed_run_before_resuming(tmp_path: Path) -> None:
    """A kill during a write outside ``shards/`` (embed's dims/ and texts/, index export, a model publish) leaves a
    temp file no later write reuses (temp names are random); resuming the stage removes it."""
    from embedforge.runner import plan, run_job
    from embedforge.spec import validate_dict

    job = validate_dict({"name": "t", "run_dir": str(tmp_path), "stages": {"ingest": {"sources": [{"path": "builtin:adi"}]}}})
    stage_dir = plan(job)["ingest"].dir
    torn = [stage_dir / "dims" / "d128" / "shards" / ".part-00000.parquet.k9.tmp", stage_dir / ".model.old" / "x"]
    for path in torn:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"torn")
    run_job(job)
    assert (stage_dir / "_SUCCESS").is_file()
    assert not any(p.exists() for p in torn) and not (stage_dir / ".model.old").exists()
