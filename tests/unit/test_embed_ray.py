"""The Ray Data executor (local mode) writes the same shards as the local executor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedforge.data.schemas import CHUNKS, embeddings_schema
from embedforge.data.shards import read_table
from embedforge.encoding.bulk_embed import OutputOptions


def _chunks(root: Path) -> Path:
    shards = root / "shards"
    shards.mkdir(parents=True)
    for i in range(2):
        rows = [{"chunk_id": f"v{i}-{j}", "doc_id": f"d{i}", "doc_version": f"v{i}", "idx": j, "title": f"Doc {i}",
                 "text": "" if (i, j) == (1, 2) else f"passage {j} of document {i} on subject {3 * i + j}",
                 "start_char": 0, "end_char": 5, "n_tokens": 6} for j in range(5)]
        pq.write_table(pa.Table.from_pylist(rows, schema=CHUNKS), shards / f"part-{i:05d}.parquet")
    return root


def test_ray_executor_matches_local_schema_and_vectors(tmp_path: Path, minilm_path, st_model, monkeypatch) -> None:
    import ray

    for var in ("RAY_AUTH_MODE", "RAY_CLIENT_MODE", "RAY_USAGE_STATS_ENABLED", "PYTHONBREAKPOINT"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # ray.init exports these; undo them after the test
        if not os.environ[var]:
            monkeypatch.delenv(var)

    from embedforge.distributed.ray_embed import embed_with_ray

    source = _chunks(tmp_path / "chunks")
    out = tmp_path / "ray-out"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        totals = embed_with_ray(source, out, str(minilm_path), OutputOptions(dims=[384, 96]), fmt="chunks",
                                actors=1, batch_rows=4, device="cpu", backend="torch")
    finally:
        ray.shutdown()
    table = read_table(out / "shards")
    assert table.schema == embeddings_schema(384)
    assert sorted(table.column("id").to_pylist()) == sorted(f"v{i}-{j}" for i in range(2) for j in range(5)
                                                              if (i, j) != (1, 2))
    assert totals["rows_embedded"] == 9 and totals["quarantined"] == 1
    bad = [json.loads(line) for p in (out / "quarantine").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert [b["reason"] for b in bad] == ["empty text"] and bad[0]["id"] == "v1-2"
    texts = {r["chunk_id"]: f"{r['title']} {r['text']}" for r in read_table(source).to_pylist()}
    ids = table.column("id").to_pylist()
    ref = st_model.encode([texts[i] for i in ids], normalize_embeddings=True)
    vectors = np.array(table.column("vector").to_pylist(), np.float32)
    assert (vectors * ref).sum(1).min() > 0.9999
    small = read_table(out / "dims" / "d96" / "shards")
    assert small.schema == embeddings_schema(96) and small.column("id").to_pylist() == ids
    assert not (out / "ray-output").exists()
