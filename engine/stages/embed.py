"""Stage ``embed``: the job's chunks (or any corpus) → embedding shards per Matryoshka dim → FAISS indexes.

Model: ``auto`` is the job's trained model when the job trains, else its base model. Passages are
``passage_text(title, text)``. One output shard per input block; a killed run resumes at the first missing
shard. Bad rows (missing id, empty text) are quarantined and counted.
"""

from __future__ import annotations

from embedforge.configs.embed import EmbedConfig
from embedforge.data.shards import count_rows
from embedforge.encoding.bulk_embed import OutputOptions, dim_dir, embed_blocks, iter_blocks
from embedforge.encoding.encoder import Encoder
from embedforge.progress import track
from embedforge.search.export import BM25_DIR, export_bm25, export_index
from embedforge.stages.base import StageContext, StageFailed


def run(ctx: StageContext) -> None:
    cfg: EmbedConfig = ctx.config
    model_ref = cfg.model if cfg.model != "auto" else ("train" if ctx.has_input("train") else "base")
    model_path = ctx.resolve_model(model_ref)
    source = ctx.input_dir("chunk") if cfg.input == "chunk" else cfg.input
    fmt = "chunks" if cfg.input == "chunk" and cfg.format == "auto" else cfg.format

    encoder = Encoder(model_path, device=ctx.job.device, dtype=cfg.precision, backend=cfg.backend,
                      max_batch_tokens=cfg.max_batch_tokens)
    opts = OutputOptions(dims=cfg.dims or [encoder.dim], vector_dtype=cfg.vector_dtype, int8=cfg.int8,
                         binary=cfg.binary, keep_text=cfg.keep_text)
    ctx.extra["model"] = {"ref": model_ref, "path": model_path, "model_id": encoder.model_id,
                          "backend": encoder.backend, "variant": encoder.variant, "dims": opts.dims}

    if cfg.executor == "ray":
        from embedforge.distributed.pool import Stalled
        from embedforge.distributed.ray_embed import embed_with_ray

        try:
            totals = embed_with_ray(source, ctx.out_dir, model_path, opts, fmt=fmt, id_field=cfg.id_field,
                                    shard_rows=cfg.shard_rows, actors=cfg.ray_actors,
                                    cpus_per_actor=cfg.ray_cpus_per_actor, io_cpus=cfg.ray_io_cpus,
                                    batch_rows=cfg.ray_batch_rows, stall_s=cfg.ray_stall_timeout_s,
                                    device=ctx.job.device, precision=cfg.precision, backend=cfg.backend,
                                    max_batch_tokens=cfg.max_batch_tokens, model_id=encoder.model_id)
        except Stalled as exc:
            raise StageFailed(str(exc)) from None
    else:
        total = count_rows(source) if fmt in ("chunks", "parquet") else None
        with track("embed", total=total, unit="docs") as progress:
            totals = embed_blocks(encoder, iter_blocks(source, fmt, cfg.shard_rows, cfg.id_field), ctx.out_dir,
                                  opts, progress, cache=cfg.cache)
            seconds = max(progress.elapsed, 1e-9)
        ctx.throughput.update({"docs_per_s": round(totals["rows_embedded"] / seconds, 2),
                               "tokens_per_s": round(totals["tokens"] / seconds, 1)})
    for key, value in totals.items():
        ctx.count(f"run_{key}", value)
    if count_rows(ctx.out_dir) == 0:
        raise StageFailed(f"embed: no usable rows in {source} (see {ctx.out_dir / 'quarantine'})")

    if cfg.index is not None:
        meta = {"model_id": encoder.model_id, "model_path": model_path, "backend": encoder.backend,
                "precision": cfg.precision}
        exported = []
        for dim in opts.dims:
            for kind in cfg.index.kinds:
                out = export_index(ctx.out_dir, dim_dir(ctx.out_dir, dim, opts.dims[0]), ctx.out_dir / "index" /
                                   f"d{dim}-{kind}", kind, meta, hnsw_m=cfg.index.hnsw_m, nlist=cfg.index.ivf_nlist,
                                   pq_m=cfg.index.pq_m)
                exported.append(str(out))
        if cfg.index.bm25:
            blocks = iter_blocks(source, fmt, cfg.shard_rows, cfg.id_field)  # the same rows the vectors came from
            exported.append(str(export_bm25(blocks, ctx.out_dir / "index" / BM25_DIR, meta)))
        ctx.extra["indexes"] = exported
