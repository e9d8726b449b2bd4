"""Sharded Parquet datasets: atomic shard writes, streaming reads, shard-level resume.

A stage's output directory holds ``shards/part-NNNNN.parquet`` (zstd). A shard is written to a temporary name
and renamed, so it is either complete or absent. Alongside each shard the stage may keep
``stats/<shard>.json`` (counters) and ``quarantine/<shard>.jsonl`` (unusable rows with reasons); both are
written *before* the shard, so a shard's presence means its counters and quarantine are on disk too, and a
re-run after a kill redoes exactly the shards that are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHARDS = "shards"


def shard_name(index: int) -> str:
    """``part-00007.parquet`` for index 7."""
    return f"part-{index:05d}.parquet"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_parquet(path: Path, table: pa.Table, *, row_group_rows: int = 8192) -> None:
    """Write ``table`` to ``path`` atomically (zstd)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Remove what killed writers leave anywhere under ``directory``: ``.<name>.tmp`` files and directories (the
    atomic writers here, ``publish_dir``, index export) and ``.<name>.old`` directories (an interrupted replace).

    Only safe while nothing writes under ``directory``; the runner calls it before it resumes a stage.
    """
    removed = []
    for path in sorted(Path(directory).rglob(".*"), reverse=True):  # children before their directory
        if path.name.endswith((".tmp", ".old")) and (path.exists() or path.is_symlink()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def list_shards(directory: str | Path) -> list[Path]:
    """Complete shards of a dataset directory (``dir/shards/*.parquet`` or ``dir/*.parquet``), sorted."""
    directory = Path(directory)
    base = directory / SHARDS if (directory / SHARDS).is_dir() else directory
    if base.is_file():
        return [base]
    return sorted(p for p in base.glob("*.parquet") if not p.name.startswith("."))


def iter_shards(directory: str | Path, columns: list[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(shard_name, table)`` one shard at a time (memory: one shard)."""
    for path in list_shards(directory):
        yield path.name, pq.read_table(path, columns=columns)


def iter_batches(directory: str | Path, columns: list[str] | None = None,
                 batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream record batches over all shards (memory: one batch)."""
    for path in list_shards(directory):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def read_table(directory: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All shards as one table (for small datasets or selected columns)."""
    paths = list_shards(directory)
    if not paths:
        raise FileNotFoundError(f"no parquet shards in {directory}")
    return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)


def count_rows(directory: str | Path) -> int:
    """Rows over all shards, from Parquet metadata (no data read)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in list_shards(directory))


class ShardWriter:
    """Writes the shards of one stage output with their counters and quarantine, resumably.

    >>> w = ShardWriter(out_dir); name = shard_name(0)
    >>> if not w.done(name): w.write(name, table, stats={"rows_in": 10}, quarantine=[{"reason": "empty"}])
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.shards_dir = self.out_dir / SHARDS
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        for sub in (SHARDS, "stats", "quarantine"):  # torn temp files of a killed run
            for stale in (self.out_dir / sub).glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def done(self, name: str) -> bool:
        """True when shard ``name`` was completely written by this or an earlier run."""
        return (self.shards_dir / name).is_file()

    def write(self, name: str, table: pa.Table, stats: dict[str, Any] | None = None,
              quarantine: Iterable[dict[str, Any]] = ()) -> None:
        """Write the quarantine and counters of a shard, then the shard itself (the commit point)."""
        rows = list(quarantine)
        stem = name.removesuffix(".parquet")
        atomic_write_text(self.out_dir / "quarantine" / f"{stem}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        merged = dict(stats or {})
        merged["rows_out"] = table.num_rows
        merged["quarantined"] = len(rows)
        atomic_write_json(self.out_dir / "stats" / f"{stem}.json", merged)
        write_parquet(self.shards_dir / name, table)

    def totals(self) -> dict[str, float]:
        """Sum of the counters of every complete shard."""
        total: dict[str, float] = {}
        for shard in list_shards(self.shards_dir):
            stats_path = self.out_dir / "stats" / f"{shard.name.removesuffix('.parquet')}.json"
            if not stats_path.is_file():
                continue
            for key, value in json.loads(stats_path.read_text()).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        return total

    def merge_quarantine(self) -> int:
        """Concatenate per-shard quarantine files of complete shards into ``quarantine.jsonl``; returns rows."""
        parts = []
        for shard in list_shards(self.shards_dir):
            q = self.out_dir / "quarantine" / f"{shard.name.removesuffix('.parquet')}.jsonl"
            if q.is_file():
                parts.append(q.read_text(encoding="utf-8"))
        text = "".join(parts)
        atomic_write_text(self.out_dir / "quarantine.jsonl", text)
        return text.count("\n")
