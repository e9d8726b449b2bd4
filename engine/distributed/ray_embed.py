"""Ray Data executor of bulk embedding: Ray's readers → an autoscaling actor pool of encoders → the driver
commits each output shard as soon as its rows are back, with the local executor's names and writer.

Reading: Parquet and chunk shards through ``ray.data.read_parquet``; JSONL and BEIR (``corpus.jsonl``)
through :class:`JsonLines`, a Ray Data file datasource that streams a file's lines in blocks; the actor
parses them, so an invalid line is quarantined with its reason exactly as the local executor does.
(``read_json`` fails the whole read on one bad line; ``read_text`` holds a whole file in one block and splits
lines on Unicode separators such as U+2028 that JSON strings may contain.)

Encoding: each :class:`EncodeBatch` actor loads one :class:`~embedforge.encoding.encoder.Encoder` and maps
a batch of input rows to ``path, id, chunk_id, doc_version, text, bad, full, tokens`` (``full``: the model's
full-dimension output; ``bad``: the reason a row is unusable). The pool is sized from the cluster's resources
(:func:`embedforge.distributed.pool.plan_pool`), so the reads always keep a CPU.

Writing: the dataset runs with ``preserve_order``, so rows come back in input order; the driver cuts them into
the same blocks as :func:`embedforge.encoding.bulk_embed.iter_blocks` (at most ``shard_rows`` rows, an input
shard never shares a block) and writes each with :func:`~embedforge.encoding.bulk_embed.write_block` the moment
it is complete: ``part-NNNNN`` per input position, extra dims and texts first, the primary shard last by
atomic rename (the marker). Same names, rows and order as the local executor, so either executor resumes the
other's run. A rerun skips input files whose shards are all written; a partly written input file is read
and encoded again, but its written shards are kept, not rewritten.

Watchdog and progress: when no batch comes back for ``stall_s`` seconds the run fails with a message naming
the stage; rows/s and ETA are logged as batches arrive.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedforge import device as dev
from embedforge.data.ingest import resolve_path
from embedforge.data.shards import ShardWriter, list_shards, shard_name
from embedforge.distributed.pool import plan_pool, watched
from embedforge.encoding.bulk_embed import (
    ID_FIELDS,
    Block,
    OutputOptions,
    detect_input_format,
    parse_line,
    parse_row,
    write_block,
)
from embedforge.progress import track

log = logging.getLogger("embedforge.embed.ray")

BLOCK_BYTES = 2 << 20
"""Ray Data's target block size during a run (about one encoded batch of 512 rows at 384-1024 dims)."""


def _json_lines_datasource() -> type:
    """:class:`JsonLines` (defined on first use: Ray is an optional dependency)."""
    from ray.data.datasource import FileBasedDatasource

    class JsonLines(FileBasedDatasource):
        """Lines of JSONL files split on ``\\n`` only (as the local reader), decoded with replacement, streamed
        in blocks of ``lines_per_block``; whitespace-only lines are dropped."""

        def __init__(self, paths: list[str], lines_per_block: int = 8192, **kwargs: Any) -> None:
            super().__init__(paths, **kwargs)
            self.lines_per_block = lines_per_block

        def _read_stream(self, f: Any, path: str) -> Any:
            lines: list[str] = []
            rest = b""
            while True:
                chunk = f.read(1 << 22)
                data = rest + chunk
                parts = data.split(b"\n")
                rest = parts.pop() if chunk else b""
                for raw in parts:
                    if raw.strip():
                        lines.append(raw.decode("utf-8", "replace"))
                    if len(lines) >= self.lines_per_block:
                        yield pa.table({"text": pa.array(lines, pa.large_string())})
                        lines = []
                if not chunk:
                    break
            if lines:
                yield pa.table({"text": pa.array(lines, pa.large_string())})

    return JsonLines


class EncodeBatch:
    """Ray actor: one encoder; maps a pyarrow batch of input rows (or JSONL lines) to full-dimension vectors."""

    def __init__(self, model_path: str, device: str, precision: str, backend: str, id_field: str | None,
                 jsonl: bool, threads: int, max_batch_tokens: int = 16384) -> None:
        from embedforge.encoding.encoder import Encoder

        dev.set_threads(threads)
        self.encoder = Encoder(model_path, device=device, dtype=precision, backend=backend,
                               max_batch_tokens=max_batch_tokens)
        self.id_field, self.jsonl = id_field, jsonl

    def rows(self, batch: pa.Table) -> tuple[list[str], list[dict[str, Any] | str], list[str]]:
        """``(paths, rows or reasons, raw texts)``."""
        paths = batch.column("path").to_pylist()
        if self.jsonl:
            lines = batch.column("text").to_pylist()
            return paths, [parse_line(line) for line in lines], lines
        rows = batch.drop_columns(["path"]).to_pylist()
        return paths, rows, [json.dumps(r, default=str) if not r.get("text") else "" for r in rows]

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths, rows, raws = self.rows(batch)
        columns: dict[str, list[Any]] = {"id": [], "chunk_id": [], "doc_version": [], "text": [], "bad": []}
        for row, raw in zip(rows, raws, strict=True):
            parsed = parse_row(row, self.id_field) if isinstance(row, dict) else (row, None)
            if len(parsed) == 4:
                values = [*parsed, None]
            else:
                reason, rid = parsed
                values = [None] * 4 + [json.dumps({"reason": reason, **({"id": rid} if rid else {}),
                                                   "raw": raw[:2000]}, ensure_ascii=False)]
            for key, value in zip(columns, values, strict=True):
                columns[key].append(value)
        good = [i for i, b in enumerate(columns["bad"]) if b is None]
        before = self.encoder.stats["tokens"]
        vectors = self.encoder.encode([columns["text"][i] for i in good], normalize=False) if good else None
        full = np.zeros((len(rows), self.encoder.dim), dtype=np.float32)
        if vectors is not None:
            full[good] = vectors
        tokens = np.zeros(len(rows), np.int64)
        if len(rows):
            tokens[0] = self.encoder.stats["tokens"] - before
        return pa.table({"path": pa.array(paths, pa.string()),
                         **{k: pa.array(v, pa.string()) for k, v in columns.items()},
                         "full": pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), self.encoder.dim),
                         "tokens": pa.array(tokens)})


@dataclass
class InputFile:
    """One input file, its rows and the output shards its rows become."""

    path: str
    rows: int
    first: int
    """Index of its first output shard."""

    def names(self, shard_rows: int) -> list[str]:
        return [shard_name(self.first + i) for i in range(math.ceil(self.rows / shard_rows))]


def plan_inputs(source: Path, fmt: str, shard_rows: int) -> list[InputFile]:
    """The input files in order with their row counts (Parquet metadata; JSONL: non-blank lines) and first
    shard index — the numbering of :func:`~embedforge.encoding.bulk_embed.iter_blocks`."""
    if fmt in ("jsonl", "beir"):
        file = source / "corpus.jsonl" if fmt == "beir" else source
        with open(file, "rb") as fh:
            return [InputFile(str(file), sum(1 for line in fh if line.strip()), 0)]
    files, first = [], 0
    for path in list_shards(source):
        meta = pq.ParquetFile(path)
        if "text" not in meta.schema_arrow.names:
            raise ValueError(f"{path}: no 'text' column (columns: {', '.join(meta.schema_arrow.names)})")
        files.append(InputFile(str(path), meta.metadata.num_rows, first))
        first += math.ceil(meta.metadata.num_rows / shard_rows)
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {source}")
    return files


class _Committer:
    """Cuts the ordered output stream into the planned blocks and writes each one when it is complete."""

    def __init__(self, out_dir: Path, opts: OutputOptions, model_id: str, shard_rows: int,
                 todo: list[InputFile]) -> None:
        self.out_dir, self.opts, self.model_id, self.shard_rows = out_dir, opts, model_id, shard_rows
        self.writer = ShardWriter(out_dir)
        self.files = iter(todo)
        self.file: InputFile | None = None
        self.parts: list[pa.Table] = []
        self.held = self.row = self.block = 0
        self.totals = {"rows_embedded": 0, "tokens": 0, "shards_written": 0, "shards_skipped": 0, "quarantined": 0}

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.file is None or (self.row >= self.file.rows and not self.held):
                self._next_file(table.column("path")[0].as_py())
            take = min(table.num_rows, self.shard_rows - self.held, self.file.rows - self.row)
            self.parts.append(table.slice(0, take))
            self.held, self.row, table = self.held + take, self.row + take, table.slice(take)
            if self.held == self.shard_rows or self.row == self.file.rows:
                self._flush()

    def _next_file(self, path: str) -> None:
        self.file = next(self.files, None)
        if self.file is None or not _same_file(path, self.file.path):
            raise RuntimeError(f"embed on Ray: rows of {path} came back out of order (expected "
                               f"{self.file.path if self.file else 'no more input'})")
        self.row = self.block = 0

    def _flush(self) -> None:
        table = pa.concat_tables(self.parts)
        start = self.row - table.num_rows
        name = shard_name(self.file.first + self.block)
        self.parts, self.held, self.block = [], 0, self.block + 1
        self.totals["tokens"] += int(pc.sum(table.column("tokens")).as_py() or 0)
        if self.writer.done(name):
            self.totals["shards_skipped"] += 1
            return
        is_bad = pc.invert(pc.is_null(table.column("bad").combine_chunks()))
        good = table.filter(pc.invert(is_bad))
        rows_bad = np.flatnonzero(is_bad.to_numpy(zero_copy_only=False))
        bad = [{"source": f"{self.file.path}#{start + int(i)}", **json.loads(table.column("bad")[int(i)].as_py())}
               for i in rows_bad]
        block = Block(name, ids=good.column("id").to_pylist(), chunk_ids=good.column("chunk_id").to_pylist(),
                      doc_versions=good.column("doc_version").to_pylist(), texts=good.column("text").to_pylist(),
                      bad=bad)
        full = good.column("full").combine_chunks()
        vectors = full.flatten().to_numpy(zero_copy_only=False).reshape(good.num_rows, full.type.list_size)
        write_block(self.out_dir, block, vectors, self.model_id, self.opts,
                    {"rows_in": table.num_rows, "tokens": int(pc.sum(table.column("tokens")).as_py() or 0)})
        self.totals["rows_embedded"] += good.num_rows
        self.totals["quarantined"] += len(bad)
        self.totals["shards_written"] += 1


def windows(files: list[InputFile], window_rows: int | None) -> list[list[InputFile]]:
    """Consecutive input files grouped into windows of at most ``window_rows`` rows (a larger file is a window
    of its own; None: one window). Each window runs as its own Ray Dataset: Ray Data keeps statistics for every
    block a Dataset has produced until that Dataset is released (ray-project/ray#66016), so the driver's memory
    follows the blocks of one window, not of the whole input; each window starts the actor pool again.

    >>> [[f.path for f in w] for w in windows([InputFile("a", 60, 0), InputFile("b", 60, 1), InputFile("c", 200, 2),
    ...                                        InputFile("d", 10, 3)], 100)]
    [['a'], ['b'], ['c'], ['d']]
    >>> [[f.path for f in w] for w in windows([InputFile("a", 40, 0), InputFile("b", 60, 1), InputFile("c", 1, 2)], 100)]
    [['a', 'b'], ['c']]
    """
    if window_rows is None:
        return [list(files)]
    out: list[list[InputFile]] = []
    rows = 0
    for f in files:
        if out and rows + f.rows <= window_rows:
            out[-1].append(f)
            rows += f.rows
        else:
            out.append([f])
            rows = f.rows
    return out


def _same_file(a: str, b: str) -> bool:
    a = a.removeprefix("file://")
    return a == b or os.path.realpath(a) == os.path.realpath(b) or os.path.realpath("/" + a) == os.path.realpath(b)


def embed_with_ray(source: str | Path, out_dir: Path, model_path: str, opts: OutputOptions, *, fmt: str = "auto",
                   id_field: str | None = None, shard_rows: int = 20000, actors: int | None = None,
                   cpus_per_actor: float | None = None, io_cpus: float = 1.0, batch_rows: int = 512,
                   stall_s: float = 600.0, device: str = "auto", precision: str = "fp32", backend: str = "auto",
                   max_batch_tokens: int = 16384, model_id: str | None = None, stage: str = "embed",
                   window_rows: int | None = None, actor_cls: type = EncodeBatch) -> dict[str, int]:
    """Embed ``source`` (JSONL, BEIR, Parquet or chunk shards) on Ray into ``out_dir``; returns this run's counters.

    Connects to the running cluster (``ray.init`` already called, or ``RAY_ADDRESS``) or starts a local one.
    ``actors``/``cpus_per_actor``/``io_cpus`` size the pool (null: from the cluster's resources);
    ``stall_s``: fail when no batch comes back for that long; ``window_rows``: input files go through Ray in
    windows of about this many rows, one Dataset each (:func:`windows`; None: one Dataset). ``actor_cls`` is
    the actor class (tests stall it).
    """
    ray = dev.optional_import("ray", "the Ray embed executor")
    path = resolve_path(str(source))
    if not path.exists():
        raise FileNotFoundError(f"embed input not found: {source}")
    fmt = detect_input_format(path, fmt)
    if fmt not in ("chunks", "parquet", "jsonl", "beir"):
        raise ValueError(f"unknown embed input format '{fmt}' (expected auto, chunks, parquet, jsonl, beir)")
    files = plan_inputs(path, fmt, shard_rows)
    writer = ShardWriter(out_dir)
    todo = [f for f in files if not all(writer.done(n) for n in f.names(shard_rows))]
    skipped = sum(len(f.names(shard_rows)) for f in files) - sum(len(f.names(shard_rows)) for f in todo)
    if not todo:
        return {"rows_embedded": 0, "tokens": 0, "shards_written": 0, "shards_skipped": skipped, "quarantined": 0}
    if model_id is None:
        from embedforge.models import model_id as compute_model_id

        model_id = compute_model_id(resolve_path(model_path))
    jsonl = fmt in ("jsonl", "beir")
    id_field = id_field or ("chunk_id" if fmt == "chunks" else None)
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    ordered, block_bytes = context.execution_options.preserve_order, context.target_max_block_size
    try:
        context.execution_options.preserve_order = True
        context.target_max_block_size = BLOCK_BYTES  # outputs of about one encoded batch (see repartition below)
        resources = ray.cluster_resources()
        pool = plan_pool(resources, actors=actors, cpus_per_actor=cpus_per_actor, io_cpus=io_cpus,
                         use_gpu=device != "cpu")
        groups = windows(todo, window_rows)
        log.info("%s on Ray: %d input file(s) to do in %d window(s) (%d shards already written); pool %s", stage,
                 len(todo), len(groups), skipped, pool.describe())
        actor_kwargs = {"model_path": model_path, "device": device, "precision": precision, "backend": backend,
                        "id_field": id_field, "jsonl": jsonl, "threads": pool.threads,
                        "max_batch_tokens": max_batch_tokens}
        committer = _Committer(out_dir, opts, model_id, shard_rows, todo)
        total = sum(f.rows for f in todo)
        with track(stage, total=total, unit="docs") as progress:
            def status() -> str:
                return f"{progress.done}/{total} rows back; pool {pool.describe()}; cluster {resources}"

            for group in groups:  # one Dataset per window, released before the next starts
                ds = _dataset(ray, [f.path for f in group], jsonl, id_field, batch_rows, pool, actor_cls,
                              actor_kwargs)
                batches = ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
                for table in watched(iter(batches), stall_s, stage, status):
                    committer.add(table)
                    progress.advance(table.num_rows, tokens=int(pc.sum(table.column("tokens")).as_py() or 0))
                del ds, batches
        missing = [n for f in todo for n in f.names(shard_rows) if not writer.done(n)]
        if missing:
            raise RuntimeError(f"{stage} on Ray: {len(missing)} shard(s) got no rows back (first: {missing[0]})")
    finally:
        context.execution_options.preserve_order = ordered
        context.target_max_block_size = block_bytes
        if started:
            ray.shutdown()
    committer.totals["shards_skipped"] += skipped
    return committer.totals


def _dataset(ray: Any, paths: list[str], jsonl: bool, id_field: str | None, batch_rows: int, pool: Any,
             actor_cls: type, actor_kwargs: dict[str, Any]) -> Any:
    """The Ray Dataset of encoded rows of ``paths``, in input order."""
    if jsonl:
        ds = ray.data.read_datasource(_json_lines_datasource()(paths, include_paths=True), num_cpus=pool.io_cpus)
    else:
        names = set(pq.read_schema(paths[0]).names)
        columns = [c for c in dict.fromkeys(("chunk_id", "doc_version", "title", "text", *ID_FIELDS,
                                             id_field or "")) if c in names]
        ds = ray.data.read_parquet(paths, include_paths=True, num_cpus=pool.io_cpus).select_columns(
            [*columns, "path"])
    # Blocks of one batch each, in order (streaming, no shuffle): with preserve_order a task's rows reach the
    # driver when the task ends, so small tasks are what lets shards commit as the run goes.
    ds = ds.repartition(target_num_rows_per_block=batch_rows)
    return ds.map_batches(actor_cls, batch_size=batch_rows, batch_format="pyarrow", compute=pool.compute(ray),
                          num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor,
                          fn_constructor_kwargs=actor_kwargs)


def ray_resources() -> dict[str, Any]:
    """The connected Ray cluster's resources (for logs and manifests)."""
    ray = dev.optional_import("ray", "the Ray embed executor")
    return dict(ray.cluster_resources()) if ray.is_initialized() else {}
