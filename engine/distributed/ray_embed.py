"""Ray Data executor of bulk embedding: ``read_parquet`` → ``map_batches`` (actor pool of encoders) →
``write_parquet``, then a driver pass that lays the result out exactly like the local executor.

Each actor loads one :class:`~embedforge.encoding.encoder.Encoder` (one per GPU on a GPU cluster: set
``num_gpus``) and turns a batch of input rows into ``id, chunk_id, doc_version, text, bad, full`` where
``full`` is the full-dimension model output and ``bad`` the quarantine reason of an unusable row. The driver
then reads Ray's output files one at a time and writes ``part-NNNNN.parquet`` shards per Matryoshka dim with
:func:`embedforge.encoding.bulk_embed.write_block` — same schema, same quarantine, same texts. A run is not
resumable mid-way (Ray owns the intermediate files); a killed run starts its Ray pass over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedforge import device as dev
from embedforge.data.shards import ShardWriter, list_shards, shard_name
from embedforge.encoding.bulk_embed import ID_FIELDS, Block, OutputOptions, _Blocks, write_block


class EncodeBatch:
    """Ray actor: an encoder that maps a pyarrow batch of input rows to full-dimension vectors."""

    def __init__(self, model_path: str, device: str, precision: str, backend: str, id_field: str | None) -> None:
        from embedforge.encoding.encoder import Encoder

        self.encoder = Encoder(model_path, device=device, dtype=precision, backend=backend)
        self.id_field = id_field

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        blocks = _Blocks(len(rows) + 1)
        kinds: list[bool] = []
        for i, row in enumerate(rows):
            before = len(blocks.block.bad)
            blocks.add(f"{row.get('path', 'ray')}#{row.get(self.id_field or 'chunk_id') or i}", row, self.id_field)
            kinds.append(len(blocks.block.bad) == before)
        block = blocks.block
        vectors = self.encoder.encode(block.texts, normalize=False) if block.texts else np.zeros((0, self.encoder.dim))
        dim = self.encoder.dim
        full = np.zeros((len(rows), dim), dtype=np.float32)
        columns: dict[str, list[Any]] = {"id": [], "chunk_id": [], "doc_version": [], "text": [], "bad": []}
        good, bad_rows = iter(range(len(block.ids))), iter(block.bad)
        for i, ok in enumerate(kinds):
            if ok:
                j = next(good)
                full[i] = vectors[j]
                values = [block.ids[j], block.chunk_ids[j], block.doc_versions[j], block.texts[j], None]
            else:
                values = [None, None, None, None, json.dumps(next(bad_rows), ensure_ascii=False)]
            for key, value in zip(columns, values, strict=True):
                columns[key].append(value)
        ids, chunk_ids, versions, texts, bad = columns.values()
        return pa.table({"id": pa.array(ids, pa.string()), "chunk_id": pa.array(chunk_ids, pa.string()),
                         "doc_version": pa.array(versions, pa.string()), "text": pa.array(texts, pa.string()),
                         "bad": pa.array(bad, pa.string()),
                         "full": pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), dim),
                         "model_id": pa.array([self.encoder.model_id] * len(rows), pa.string())})


def embed_with_ray(source: str | Path, out_dir: Path, model_path: str, opts: OutputOptions, *, fmt: str,
                   id_field: str | None = None, actors: int = 2, batch_rows: int = 512, device: str = "auto",
                   precision: str = "fp32", backend: str = "auto") -> dict[str, int]:
    """Embed Parquet/chunks shards of ``source`` with a Ray Data actor pool into ``out_dir``; returns counters."""
    ray = dev.optional_import("ray", "the Ray embed executor")
    if fmt not in ("chunks", "parquet", "auto"):
        raise ValueError(f"the ray executor reads Parquet/chunks shards; input format '{fmt}' is not supported "
                         "(use executor: local, or convert the input to Parquet)")
    paths = [str(p) for p in list_shards(source)]
    if not paths:
        raise FileNotFoundError(f"no Parquet shards in {source}")
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    staging = out_dir / "ray-output"
    shutil.rmtree(staging, ignore_errors=True)
    id_field = id_field or ("chunk_id" if fmt == "chunks" else None)
    names = set(pq.read_schema(paths[0]).names)
    columns = [c for c in dict.fromkeys(("chunk_id", "doc_version", "title", "text", *ID_FIELDS, id_field or ""))
               if c in names]
    use_gpu = dev.gpu_count() > 0 and device != "cpu"
    try:
        ds = ray.data.read_parquet(paths, columns=columns, include_paths=True)
        ds = ds.map_batches(EncodeBatch, batch_size=batch_rows, batch_format="pyarrow", concurrency=actors,
                            num_gpus=1 if use_gpu else 0,
                            fn_constructor_kwargs={"model_path": model_path, "device": device,
                                                   "precision": precision, "backend": backend,
                                                   "id_field": id_field})
        ds.write_parquet(str(staging))
    finally:
        if started:
            ray.shutdown()
    totals = _layout(staging, out_dir, opts)
    shutil.rmtree(staging, ignore_errors=True)
    return totals


def _layout(staging: Path, out_dir: Path, opts: OutputOptions) -> dict[str, int]:
    """Ray's output files → ``part-NNNNN`` shards per dim with quarantine, via the local executor's writer."""
    writer = ShardWriter(out_dir)
    totals = {"rows_embedded": 0, "shards_written": 0, "quarantined": 0}
    for index, path in enumerate(sorted(staging.rglob("*.parquet"))):
        table = pq.read_table(path)
        if table.num_rows == 0:
            continue
        good = table.filter(pc.is_null(table.column("bad")))
        bad = table.filter(pc.invert(pc.is_null(table.column("bad"))))
        block = Block(shard_name(index), ids=good.column("id").to_pylist(),
                      chunk_ids=good.column("chunk_id").to_pylist(),
                      doc_versions=good.column("doc_version").to_pylist(), texts=good.column("text").to_pylist(),
                      bad=[json.loads(b) for b in bad.column("bad").to_pylist()])
        full = good.column("full").combine_chunks()
        vectors = full.flatten().to_numpy(zero_copy_only=False).reshape(good.num_rows, full.type.list_size)
        if writer.done(block.name):
            continue
        model_id = table.column("model_id")[0].as_py()
        write_block(out_dir, block, vectors, model_id, opts, {"rows_in": table.num_rows})
        totals["rows_embedded"] += good.num_rows
        totals["quarantined"] += bad.num_rows
        totals["shards_written"] += 1
    return totals


def ray_resources() -> dict[str, Any]:
    """The connected Ray cluster's resources (for logs and manifests)."""
    ray = dev.optional_import("ray", "the Ray embed executor")
    return dict(ray.cluster_resources()) if ray.is_initialized() else {}
