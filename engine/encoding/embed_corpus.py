"""Embed a corpus and export its indexes: the one function behind the ``embed`` stage and ``embedforge embed``.

Both build an :class:`~embedforge.configs.embed.EmbedConfig` and call :func:`embed_corpus`; the stage records the
result in its manifest (the runner writes it), the command writes ``manifest.json`` and ``_SUCCESS`` into its
output directory itself (it runs outside a job).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.configs.embed import EmbedConfig
from embedforge.data.ingest import resolve_path
from embedforge.data.shards import count_rows
from embedforge.encoding.bulk_embed import (
    OutputOptions,
    detect_input_format,
    dim_dir,
    embed_blocks,
    iter_blocks,
)
from embedforge.encoding.encoder import Encoder
from embedforge.progress import per_second, track
from embedforge.search.export import BM25_DIR, export_bm25, export_index


@dataclass
class EmbedRun:
    """What one :func:`embed_corpus` call did."""

    model: dict[str, Any]
    """``path``, ``model_id``, ``backend``, ``variant``, ``precision`` and the ``dims`` written."""
    format: str
    """The input format read (``chunks``, ``parquet``, ``jsonl`` or ``beir``)."""
    totals: dict[str, int]
    """This run's counters (rows embedded, shards written, tokens, cache hits, ...)."""
    seconds: float
    throughput: dict[str, float] = field(default_factory=dict)
    """``docs_per_s`` and ``tokens_per_s`` of this run."""
    indexes: list[str] = field(default_factory=list)
    """Exported index directories (FAISS per dim × kind, then BM25)."""


def embed_corpus(cfg: EmbedConfig, model_path: str, source: str | Path, out_dir: Path,
                 device: str = "auto") -> EmbedRun:
    """Embed ``source`` with the model at ``model_path`` into ``out_dir`` (resuming finished shards), then export the
    indexes ``cfg.index`` asks for. Raises ``ValueError`` when no row is usable, ``Stalled`` when a Ray run stalls.

    >>> run = embed_corpus(EmbedConfig(input="corpus.jsonl", dims=[384, 128]), "models/tuned", "corpus.jsonl",
    ...                    Path("out"))
    """
    encoder = Encoder(model_path, device=device, dtype=cfg.precision, backend=cfg.backend,
                      max_batch_tokens=cfg.max_batch_tokens)
    fmt = detect_input_format(resolve_path(str(source)), cfg.format)
    opts = OutputOptions(dims=cfg.dims or [encoder.dim], vector_dtype=cfg.vector_dtype, int8=cfg.int8,
                         binary=cfg.binary, keep_text=cfg.keep_text)
    model = {"path": model_path, "model_id": encoder.model_id, "backend": encoder.backend,
             "variant": encoder.variant, "precision": cfg.precision, "dims": opts.dims}
    t0 = time.perf_counter()
    if cfg.executor == "ray":
        from embedforge.distributed.ray_embed import embed_with_ray

        totals = embed_with_ray(source, out_dir, model_path, opts, fmt=fmt, id_field=cfg.id_field,
                                shard_rows=cfg.shard_rows, actors=cfg.ray_actors,
                                cpus_per_actor=cfg.ray_cpus_per_actor, io_cpus=cfg.ray_io_cpus,
                                batch_rows=cfg.ray_batch_rows, stall_s=cfg.ray_stall_timeout_s, device=device,
                                precision=cfg.precision, backend=cfg.backend, max_batch_tokens=cfg.max_batch_tokens,
                                model_id=encoder.model_id, window_rows=cfg.ray_window_rows)
    else:
        total = count_rows(resolve_path(str(source))) if fmt in ("chunks", "parquet") else None
        with track("embed", total=total, unit="docs") as progress:
            totals = embed_blocks(encoder, iter_blocks(source, fmt, cfg.shard_rows, cfg.id_field), out_dir, opts,
                                  progress, cache=cfg.cache)
    seconds = max(time.perf_counter() - t0, 1e-9)
    if count_rows(out_dir) == 0:
        raise ValueError(f"no usable rows in {source} (see {out_dir / 'quarantine'})")
    run = EmbedRun(model, fmt, totals, seconds,
                   {"docs_per_s": per_second(totals["rows_embedded"], seconds),
                    "tokens_per_s": per_second(totals.get("tokens", 0), seconds)})
    if cfg.index is not None:
        meta = {k: model[k] for k in ("model_id", "backend", "precision")} | {"model_path": model_path}
        for dim in opts.dims:
            for kind in cfg.index.kinds:
                run.indexes.append(str(export_index(out_dir, dim_dir(out_dir, dim, opts.dims[0]),
                                                    out_dir / "index" / f"d{dim}-{kind}", kind, meta,
                                                    hnsw_m=cfg.index.hnsw_m, nlist=cfg.index.ivf_nlist,
                                                    pq_m=cfg.index.pq_m)))
        if cfg.index.bm25:  # the same rows the vectors came from, with their full texts
            blocks = iter_blocks(source, fmt, cfg.shard_rows, cfg.id_field)
            run.indexes.append(str(export_bm25(blocks, out_dir / "index" / BM25_DIR, meta,
                                                 stemmer=cfg.index.bm25_stemmer)))
    return run
