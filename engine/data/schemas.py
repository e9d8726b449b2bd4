"""The Parquet data contracts between stages (see the README's "Data contracts")."""

from __future__ import annotations

import pyarrow as pa

DOCUMENTS = pa.schema([
    ("doc_id", pa.string()), ("doc_version", pa.string()), ("title", pa.string()), ("text", pa.string()),
    ("source", pa.string()), ("meta", pa.string()),
])
"""One row per cleaned document; ``doc_version`` is the content hash of the cleaned title and text."""

CHUNKS = pa.schema([
    ("chunk_id", pa.string()), ("doc_id", pa.string()), ("doc_version", pa.string()), ("idx", pa.int32()),
    ("title", pa.string()), ("text", pa.string()), ("start_char", pa.int64()), ("end_char", pa.int64()),
    ("n_tokens", pa.int32()),
])
"""``text`` is exactly ``document.text[start_char:end_char]``; ``chunk_id`` is ``<doc_version[:16]>-<idx>``."""

QUERIES = pa.schema([
    ("query_id", pa.string()), ("chunk_id", pa.string()), ("doc_id", pa.string()), ("query", pa.string()),
    ("kind", pa.string()), ("generator", pa.string()), ("prompt_hash", pa.string()), ("seed", pa.int64()),
    ("split", pa.string()),
])
"""Synthetic queries; ``kind`` is llm | title | ict | keyword, ``split`` is train | val (by document)."""

TRIPLES = pa.schema([
    ("query_id", pa.string()), ("query", pa.string()), ("pos_chunk_id", pa.string()), ("positive", pa.string()),
    ("neg_chunk_ids", pa.list_(pa.string())), ("negatives", pa.list_(pa.string())), ("pos_score", pa.float32()),
    ("neg_scores", pa.list_(pa.float32())),
])
"""Training rows: a query, its positive and its mined hard negatives with their scores."""


def embeddings_schema(dim: int, dtype: str = "float32", int8: bool = False, binary: bool = False) -> pa.Schema:
    """Schema of embedding shards: vectors as fixed-size lists, optional int8 (+ scale) and packed binary."""
    value = pa.float16() if dtype == "float16" else pa.float32()
    fields = [("id", pa.string()), ("chunk_id", pa.string()), ("doc_version", pa.string()),
              ("model_id", pa.string()), ("dim", pa.int32()), ("vector", pa.list_(value, dim))]
    if int8:
        fields += [("int8", pa.list_(pa.int8(), dim)), ("scale", pa.float32())]
    if binary:
        fields += [("binary", pa.list_(pa.uint8(), (dim + 7) // 8))]
    return pa.schema(fields)


def passage_text(title: str | None, text: str) -> str:
    """The text a passage is embedded as: ``title + " " + text`` (BEIR's convention), or whichever is present."""
    return f"{title} {text}" if title and text else (title or text)
