"""Sharded datasets: atomic writes, resume bookkeeping, streaming reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data import shards
from engine.data.shards import ShardWriter, count_rows, iter_batches, list_shards, read_table, shard_name


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
