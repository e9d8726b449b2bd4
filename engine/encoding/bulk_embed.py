"""Bulk embedding: any corpus (JSONL, Parquet, our CHUNKS shards, BEIR) → embedding shards, block by block.

Shared by the ``embed`` stage, the ``embedforge embed`` command and the Ray executor. The input is streamed
in blocks of at most ``shard_rows`` rows (an input Parquet shard is never split across two blocks' boundaries
with another shard); each block becomes one output shard ``part-NNNNN.parquet`` (the
same numbering on every run, so a killed run resumes at the first missing shard). Memory holds one block.

Output layout of a directory ``out``::

    out/shards/part-*.parquet           the first dim in ``dims`` (embeddings schema)
    out/dims/d<dim>/shards/part-*.parquet   each further Matryoshka dim
    out/texts/part-*.parquet            id → text (for search results), when kept
    out/stats, out/quarantine           per-shard counters and unusable rows

A block's extra dims and texts are written before its primary shard, which is the commit point.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedforge.data.ingest import resolve_path
from embedforge.data.schemas import embeddings_schema, passage_text
from embedforge.data.shards import ShardWriter, list_shards, shard_name, write_parquet
from embedforge.encoding.encoder import Encoder, truncate_normalize
from embedforge.search.quantize import pack_binary, quantize_int8

ID_FIELDS = ("id", "_id", "chunk_id", "doc_id")


@dataclass
class Block:
    """Up to ``shard_rows`` usable input rows, plus the unusable ones with reasons."""

    name: str
    ids: list[str] = field(default_factory=list)
    chunk_ids: list[str] = field(default_factory=list)
    doc_versions: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.ids) + len(self.bad)


@dataclass
class OutputOptions:
    """What goes into the embedding shards."""

    dims: list[int]
    vector_dtype: str = "float32"
    int8: bool = False
    binary: bool = False
    keep_text: bool = True


def content_version(text: str) -> str:
    """Content hash of a passage, used as ``doc_version`` when the input has none."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def detect_input_format(path: Path, declared: str = "auto") -> str:
    """``chunks`` / ``parquet`` / ``jsonl`` / ``beir`` from the path (or the declared format)."""
    if declared != "auto":
        return declared
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return "beir"
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    shards = list_shards(path) if path.exists() else []
    if shards:
        names = pq.read_schema(shards[0]).names
        return "chunks" if {"chunk_id", "doc_version", "text"} <= set(names) else "parquet"
    raise ValueError(f"{path}: cannot tell the input format (expected a .jsonl file, a BEIR directory with "
                     "corpus.jsonl, or Parquet shards); pass the format explicitly")


def parse_row(row: dict[str, Any], id_field: str | None) -> tuple[str, str, str, str] | tuple[str, str | None]:
    """``(id, chunk_id, doc_version, text)`` of a usable input row, else ``(reason, id or None)``.

    The passage is ``passage_text(title, text)``; a record with a title and no body is its title (as BEIR and
    sentence-transformers' evaluators treat it), and a row is empty only when title and text both are.
    """
    rid = row.get(id_field) if id_field else next((row[f] for f in ID_FIELDS if row.get(f) not in (None, "")), None)
    title = row.get("title") if isinstance(row.get("title"), str) else ""
    body = row.get("text") if isinstance(row.get("text"), str) else ""
    text = passage_text(title, body) if body.strip() else title.strip()
    if rid in (None, ""):
        return "missing id", None
    if not text.strip():
        return "empty text", str(rid)
    return str(rid), str(row.get("chunk_id") or rid), str(row.get("doc_version") or content_version(text)), text


def parse_line(raw: str) -> dict[str, Any] | str:
    """A JSONL line as a row, or the reason it is unusable."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg})"
    return row if isinstance(row, dict) else "not a JSON object"


class _Blocks:
    """Collects rows into blocks named ``part-00000`` onwards."""

    def __init__(self, shard_rows: int) -> None:
        self.shard_rows, self.index = shard_rows, 0
        self.block = Block(shard_name(0))

    def add(self, source: str, row: dict[str, Any], id_field: str | None, raw: str = "") -> Block | None:
        parsed = parse_row(row, id_field)
        if len(parsed) == 2:
            reason, rid = parsed
            self.block.bad.append({"source": source, "reason": reason, **({"id": rid} if rid else {}),
                                   "raw": raw[:2000]})
        else:
            rid, chunk_id, version, text = parsed
            self.block.ids.append(rid)
            self.block.chunk_ids.append(chunk_id)
            self.block.doc_versions.append(version)
            self.block.texts.append(text)
        return self.cut() if self.block.rows_in >= self.shard_rows else None

    def bad(self, source: str, reason: str, raw: str) -> Block | None:
        self.block.bad.append({"source": source, "reason": reason, "raw": raw[:2000]})
        return self.cut() if self.block.rows_in >= self.shard_rows else None

    def cut(self) -> Block:
        done = self.block
        self.index += 1
        self.block = Block(shard_name(self.index))
        return done


def iter_blocks(source: str | Path, fmt: str = "auto", shard_rows: int = 20000,
                id_field: str | None = None) -> Iterator[Block]:
    """Stream ``source`` as blocks of at most ``shard_rows`` rows (bad rows included, with reasons)."""
    path = resolve_path(str(source))
    if not path.exists():
        raise FileNotFoundError(f"embed input not found: {source}")
    fmt = detect_input_format(path, fmt)
    blocks = _Blocks(shard_rows)
    if fmt in ("jsonl", "beir"):
        file = path / "corpus.jsonl" if fmt == "beir" else path
        with open(file, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                text = raw.decode("utf-8", "replace")
                row = parse_line(text)
                out = (blocks.add(f"{file}:{lineno}", row, id_field, text) if isinstance(row, dict)
                       else blocks.bad(f"{file}:{lineno}", row, text))
                if out is not None:
                    yield out
    elif fmt in ("parquet", "chunks"):
        for shard in list_shards(path):
            parquet = pq.ParquetFile(shard)
            wanted = [c for c in ("chunk_id", "doc_version", "title", "text", *ID_FIELDS, id_field or "")
                      if c in parquet.schema_arrow.names]
            if "text" not in wanted:
                raise ValueError(f"{shard}: no 'text' column (columns: {', '.join(parquet.schema_arrow.names)})")
            row_no = 0
            for batch in parquet.iter_batches(batch_size=min(shard_rows, 8192), columns=list(dict.fromkeys(wanted))):
                for row in batch.to_pylist():
                    out = blocks.add(f"{shard}#{row_no}", row, id_field or ("chunk_id" if fmt == "chunks" else None),
                                     json.dumps(row, default=str)[:2000] if not row.get("text") else "")
                    row_no += 1
                    if out is not None:
                        yield out
            if blocks.block.rows_in:  # an input shard never spans two output shards
                yield blocks.cut()
    else:
        raise ValueError(f"unknown embed input format '{fmt}' (expected auto, chunks, parquet, jsonl, beir)")
    if blocks.block.rows_in:
        yield blocks.block


def embeddings_table(vectors: np.ndarray, block: Block, model_id: str, dim: int, opts: OutputOptions) -> pa.Table:
    """One dim's embedding shard for ``block`` from full-dimension ``vectors`` (truncated, re-normalized)."""
    v = truncate_normalize(vectors, dim)
    value = pa.float16() if opts.vector_dtype == "float16" else pa.float32()
    flat = v.astype(np.float16 if opts.vector_dtype == "float16" else np.float32).ravel()
    n = len(block.ids)
    columns: dict[str, pa.Array] = {
        "id": pa.array(block.ids, pa.string()), "chunk_id": pa.array(block.chunk_ids, pa.string()),
        "doc_version": pa.array(block.doc_versions, pa.string()),
        "model_id": pa.array([model_id] * n, pa.string()), "dim": pa.array(np.full(n, dim, np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, value), dim),
    }
    if opts.int8:  # the one quantization rule, the codes the quantized search scores
        codes, scale = quantize_int8(v)
        columns["int8"] = pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel(), pa.int8()), dim)
        columns["scale"] = pa.array(scale)
    if opts.binary:
        bits = pack_binary(v)
        columns["binary"] = pa.FixedSizeListArray.from_arrays(pa.array(bits.ravel(), pa.uint8()), bits.shape[1])
    schema = embeddings_schema(dim, opts.vector_dtype, opts.int8, opts.binary)
    return pa.Table.from_pydict(columns, schema=schema)


def dim_dir(out_dir: Path, dim: int, primary: int) -> Path:
    """Where the shards of ``dim`` live: ``out`` for the first dim, ``out/dims/d<dim>`` for the others."""
    return out_dir if dim == primary else out_dir / "dims" / f"d{dim}"


def write_block(out_dir: Path, block: Block, vectors: np.ndarray, model_id: str, opts: OutputOptions,
                stats: dict[str, Any]) -> None:
    """Write all of a block's outputs; the primary shard goes last (the commit point)."""
    primary = opts.dims[0]
    for dim in opts.dims[1:]:
        write_parquet(dim_dir(out_dir, dim, primary) / "shards" / block.name,
                      embeddings_table(vectors, block, model_id, dim, opts))
    if opts.keep_text:
        write_parquet(out_dir / "texts" / block.name, pa.table({
            "id": pa.array(block.ids, pa.string()),
            "text": pa.array(block.texts, pa.string())}))
    ShardWriter(out_dir).write(block.name, embeddings_table(vectors, block, model_id, primary, opts),
                               stats=stats, quarantine=block.bad)


def embed_blocks(encoder: Encoder, blocks: Iterator[Block], out_dir: Path, opts: OutputOptions,
                 progress: Any = None, cache: bool = True) -> dict[str, int]:
    """Embed every block not yet written; returns counters of this run (rows, tokens, cache hits, skipped)."""
    writer = ShardWriter(out_dir)
    for dim in opts.dims:
        if dim > encoder.dim:
            raise ValueError(f"dims: {dim} is larger than the model's dimension {encoder.dim}")
    totals = {"rows_embedded": 0, "tokens": 0, "cache_hits": 0, "shards_skipped": 0, "shards_written": 0}
    for block in blocks:
        if writer.done(block.name):
            totals["shards_skipped"] += 1
            if progress is not None:
                progress.advance(block.rows_in)
            continue
        before = dict(encoder.stats)
        vectors = encoder.encode(block.texts, normalize=False, cache=cache) if block.texts else \
            np.zeros((0, encoder.dim), np.float32)
        tokens = encoder.stats["tokens"] - before["tokens"]
        hits = encoder.stats["cache_hits"] - before["cache_hits"]
        stats = {"rows_in": block.rows_in, "tokens": tokens, "cache_hits": hits}
        write_block(out_dir, block, vectors, encoder.model_id, opts, stats)
        totals["rows_embedded"] += len(block.ids)
        totals["tokens"] += tokens
        totals["cache_hits"] += hits
        totals["shards_written"] += 1
        if progress is not None:
            progress.advance(block.rows_in, cached=hits, tokens=tokens)
    return totals
