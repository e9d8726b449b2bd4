"""Bulk embedding: input formats, schema and ids, quarantine, resume after a kill, index export and search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedforge.data.schemas import CHUNKS, embeddings_schema
from embedforge.data.shards import list_shards, read_table
from embedforge.encoding.bulk_embed import OutputOptions, embed_blocks, iter_blocks
from embedforge.search.export import export_index, find_indexes, load_index

DOCS = [("d1", "Vitamin D", "Vitamin D deficiency causes rickets in children."),
        ("d2", "Wing design", "Swept wings delay compressibility effects at transonic speeds."),
        ("d3", "", "Gene expression in yeast under heat shock."),
        ("d4", "Sleep", "Sleep deprivation impairs memory consolidation."),
        ("d5", "Rivers", "Sediment transport in braided rivers.")]


def _jsonl(path: Path) -> Path:
    lines = [json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in DOCS]
    lines += [json.dumps({"_id": "", "text": "no id here"}), json.dumps({"_id": "e", "text": "  "}), "{broken"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_quarantines_bad_rows(tmp_path: Path) -> None:
    blocks = list(iter_blocks(_jsonl(tmp_path / "c.jsonl"), shard_rows=3))
    assert [b.name for b in blocks] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sum(len(b.ids) for b in blocks) == 5
    reasons = [r["reason"] for b in blocks for r in b.bad]
    assert reasons[:2] == ["missing id", "empty text"] and reasons[2].startswith("invalid JSON")
    assert blocks[2].bad[-1]["source"].endswith("c.jsonl:8")
    assert blocks[0].texts[0] == "Vitamin D Vitamin D deficiency causes rickets in children."


def test_embed_writes_schema_ids_dims_and_quarantine(encoder, st_model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = OutputOptions(dims=[384, 64], vector_dtype="float16", int8=True, binary=True)
    totals = embed_blocks(encoder, iter_blocks(_jsonl(tmp_path / "c.jsonl"), shard_rows=4), out, opts, cache=False)
    assert totals["rows_embedded"] == 5 and totals["shards_written"] == 2
    table = read_table(out / "shards")
    assert table.schema == embeddings_schema(384, "float16", int8=True, binary=True)
    assert table.column("id").to_pylist() == ["d1", "d2", "d3", "d4", "d5"]
    assert set(table.column("model_id").to_pylist()) == {encoder.model_id}
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    ref = st_model.encode([f"{t} {x}" if t else x for _, t, x in DOCS], normalize_embeddings=True)
    assert (vectors * ref).sum(1).min() > 0.999  # float16 storage
    q = np.array(table.column("int8").to_pylist(), np.float32) * np.array(table.column("scale").to_pylist())[:, None]
    assert (q * ref).sum(1).min() > 0.99
    small = read_table(out / "dims" / "d64" / "shards")
    assert small.schema.field("vector").type.list_size == 64 and set(small.column("dim").to_pylist()) == {64}
    bad = [json.loads(line) for q in sorted((out / "quarantine").glob("*.jsonl")) for line in q.read_text().splitlines()]
    assert len(bad) == 3 and {b["reason"] for b in bad} >= {"missing id", "empty text"}
    stats = [json.loads(p.read_text()) for p in (out / "stats").glob("*.json")]
    assert sum(s["quarantined"] for s in stats) == 3 and sum(s["rows_in"] for s in stats) == 8


def test_texts_hold_the_exact_embedded_input(encoder, tmp_path: Path) -> None:
    long_body = " ".join(f"word{i}" for i in range(600))  # ~5,000 characters: longer than any display snippet
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"_id": "long", "title": "A title", "text": long_body}) + "\n"
                   + json.dumps({"_id": "short", "text": "Only a body."}) + "\n")
    out = tmp_path / "out"
    embed_blocks(encoder, iter_blocks(src, shard_rows=10), out, OutputOptions(dims=[384]), cache=False)
    texts = read_table(out / "texts")
    stored = dict(zip(texts.column("id").to_pylist(), texts.column("text").to_pylist(), strict=True))
    assert stored == {"long": "A title " + long_body, "short": "Only a body."}
    vectors = np.array(read_table(out / "shards").column("vector").to_pylist(), dtype=np.float32)
    again = encoder.encode([stored["long"], stored["short"]], normalize=True)
    assert (vectors * again).sum(1).min() > 0.9999  # the stored text rebuilds the vector


def test_resume_after_a_kill_has_no_torn_or_duplicated_rows(encoder, tmp_path: Path) -> None:
    chunks = tmp_path / "chunks" / "shards"
    chunks.mkdir(parents=True)
    for i in range(3):
        rows = [{"chunk_id": f"v{i}-{j}", "doc_id": f"d{i}", "doc_version": f"v{i}", "idx": j, "title": "T",
                 "text": f"chunk {j} of document {i} about topic {i * 7 + j}", "start_char": 0, "end_char": 10,
                 "n_tokens": 8} for j in range(4)]
        pq.write_table(pa.Table.from_pylist(rows, schema=CHUNKS), chunks / f"part-{i:05d}.parquet")
    out = tmp_path / "emb"
    opts = OutputOptions(dims=[384])

    def killed_after_one():
        for n, block in enumerate(iter_blocks(chunks.parent, "chunks", shard_rows=100)):
            if n == 1:
                (out / "shards" / ".part-00001.parquet.x.tmp").write_bytes(b"torn")  # a half-written shard
                raise KeyboardInterrupt("killed")
            yield block

    with pytest.raises(KeyboardInterrupt):
        embed_blocks(encoder, killed_after_one(), out, opts, cache=False)
    first = out / "shards" / "part-00000.parquet"
    stamp = first.stat().st_mtime_ns
    totals = embed_blocks(encoder, iter_blocks(chunks.parent, "chunks", shard_rows=100), out, opts, cache=False)
    assert totals["shards_skipped"] == 1 and totals["shards_written"] == 2
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in list_shards(out / "shards")] == [f"part-{i:05d}.parquet" for i in range(3)]
    ids = read_table(out / "shards").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12 and ids[0] == "v0-0"
    assert read_table(out / "shards").column("doc_version").to_pylist()[-1] == "v2"


@pytest.fixture(scope="module")
def embedded(encoder, tmp_path_factory) -> Path:
    """The small corpus embedded once at dims 384 and 128 (shared by the index tests)."""
    root = tmp_path_factory.mktemp("embedded")
    out = root / "out"
    embed_blocks(encoder, iter_blocks(_jsonl(root / "c.jsonl")), out, OutputOptions(dims=[384, 128]), cache=False)
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_export_and_search(encoder, embedded: Path, tmp_path: Path, kind: str) -> None:
    meta = {"model_id": encoder.model_id, "model_path": str(encoder.path)}
    export_index(embedded, embedded / "dims" / "d128", tmp_path / "index" / f"d128-{kind}", kind, meta)
    loaded = load_index(find_indexes(tmp_path)[0])
    assert loaded.meta["dim"] == 128 and loaded.meta["rows"] == 5 and loaded.meta["kind"] == kind
    scores, rows = loaded.search(encoder.encode(["what causes rickets?"], dim=128), k=3)
    assert loaded.ids.column("id")[int(rows[0][0])].as_py() == "d1"
    assert "rickets" in loaded.ids.column("text")[int(rows[0][0])].as_py()
    assert scores[0][0] >= scores[0][-1]


def test_title_only_records_are_documents(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"_id": "a", "title": "Only a title", "text": ""},
        {"_id": "b", "title": "  Title  ", "text": None},
        {"_id": "c", "title": "", "text": "   "},
        {"_id": "d", "title": "T", "text": "body"}]) + "\n")
    (block,) = iter_blocks(src)
    assert block.ids == ["a", "b", "d"] and block.texts == ["Only a title", "Title", "T body"]
    assert [(b["id"], b["reason"]) for b in block.bad] == [("c", "empty text")]
