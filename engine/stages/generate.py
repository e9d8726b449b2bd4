"""Stage ``generate``: chunk shards → synthetic query shards (one output shard per chunk shard).

For each chunk shard: LLM prompts for a share of its chunks (the whole shard in one backend call), parsing of
the outputs (unparseable ones quarantined with their raw text), title / inverse-cloze / keyword queries,
filters (normalization, length, verbatim copy, exact and near duplicates, round-trip consistency under the
base embedding model), a train/val split by document, then one atomic shard write. A killed run resumes at
the first unwritten shard; exact duplicates are checked against the queries of the shards already written, so
a resumed run writes the same rows as an uninterrupted one (given a deterministic generator).

``executor: ray`` runs the LLM calls on a Ray Data actor pool (one engine per worker,
:mod:`embedforge.distributed.ray_generate`); everything else stays here, with the same per-shard code
(:mod:`embedforge.generation.query_maker`), so both executors write the same shards and resume each other's runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from embedforge.configs.generate import GenerateConfig
from embedforge.data.schemas import passage_text
from embedforge.data.shards import count_rows, iter_shards, list_shards, read_table
from embedforge.generation.backends import LLMBackend, Usage, open_backend
from embedforge.generation.filters import RULES, Candidate, dedup_key, roundtrip_mask
from embedforge.generation.query_maker import QueryMaker, ShardCompletions
from embedforge.progress import track
from embedforge.stages.base import StageContext, StageFailed

log = logging.getLogger("embedforge.generate")
COLUMNS = ["chunk_id", "doc_id", "idx", "title", "text"]


def run(ctx: StageContext) -> None:
    cfg: GenerateConfig = ctx.config
    writer = ctx.writer()
    chunk_dir = ctx.input_dir("chunk")
    corpus = read_table(chunk_dir, columns=["chunk_id", "title", "text"])
    if corpus.num_rows == 0:
        raise StageFailed("generate: the chunk output has no rows")
    todo = [path for path in list_shards(chunk_dir) if not writer.done(path.name)]
    pending = ((path.name, pq.read_table(path, columns=COLUMNS).to_pylist()) for path in todo)

    # Corpus-wide parts, built once per run: prompt builders, keyword idf, corpus embeddings for the round-trip
    # filter, and the dedup keys of the shards a killed run already wrote.
    maker = QueryMaker.build(cfg, ctx.job.seed, corpus.column("text").to_pylist())
    roundtrip = _roundtrip_filter(ctx, corpus) if cfg.roundtrip_top_k > 0 and todo else None
    seen = {dedup_key(q) for name, t in iter_shards(ctx.out_dir, columns=["query"]) for q in t.column("query").to_pylist()}
    usage = Usage()
    generator: str | None = None

    # The LLM calls run here or on a Ray actor pool; parsing, filters and writes run here, in shard order.
    if cfg.executor == "ray":
        from embedforge.distributed.ray_generate import ray_completions

        r = cfg.resources
        results = ray_completions(pending, maker, usage, workers=r.workers, gpus=r.gpus, cpus=r.cpus)
    else:
        results = _local_completions(ctx, pending, maker, usage)
    with track("generate", total=corpus.num_rows, unit="chunks") as progress, closing(results):
        progress.advance(corpus.num_rows - sum(count_rows(path) for path in todo))
        for shard in results:
            table, stats, quarantine = maker.shard_rows(shard, seen, roundtrip)
            writer.write(shard.name, table, stats=stats, quarantine=quarantine)
            generator = shard.generator_id or generator
            # the manifest's figure (LLM output tokens per second of LLM time), not a second definition
            progress.advance(len(shard.rows), rates={"output_tokens_per_s": usage.rates()["output_tokens_per_s"]}
                             if usage.prompts else None)

    if usage.prompts:
        ctx.throughput.update(usage.rates())
    ctx.extra["generate"] = {"backend": cfg.backend if "llm" in cfg.sources else None, "generator": generator,
                             "executor": cfg.executor, "prompt_hash": maker.llm_prompt_hash,
                             "filter_rules": list(RULES), "retries": usage.extra.get("retries", 0)}


def _local_completions(ctx: StageContext, shards: Iterable[tuple[str, list[dict[str, Any]]]], maker: QueryMaker,
                       usage: Usage) -> Iterator[ShardCompletions]:
    """The local executor: one backend in this process (opened at the first prompt), one call per shard."""
    backend: LLMBackend | None = None
    try:
        for name, rows in shards:
            picked, prompts = maker.prompts(rows)
            if prompts and backend is None:
                backend = _open(ctx, maker.cfg)
            started = time.perf_counter()
            completions = backend.generate([p.messages for p in prompts], maker.sampling, maker.seed) if prompts else []
            usage.add(completions, time.perf_counter() - started)
            yield ShardCompletions(name, rows, picked, prompts, completions, backend.generator_id if backend else None)
    finally:
        if backend is not None:
            usage.extra["retries"] = getattr(backend, "retries", 0)
            backend.close()


def _open(ctx: StageContext, cfg: GenerateConfig) -> LLMBackend:
    model = cfg.model if cfg.backend == "openai" else ctx.resolve_model(cfg.model)
    log.info("generate: %s backend, model %s", cfg.backend, model)
    return open_backend(cfg, model, ctx.job.seed)


def _roundtrip_filter(ctx: StageContext, corpus: pa.Table):  # noqa: ANN202 - returns a closure
    """Encode the corpus once; the returned function keeps candidates whose chunk ranks in the top k."""
    from embedforge.encoding.encoder import get_encoder

    cfg: GenerateConfig = ctx.config
    encoder = get_encoder(ctx.resolve_model(cfg.roundtrip_model), device=ctx.job.device)
    passages = [passage_text(t, x) for t, x in zip(corpus.column("title").to_pylist(),
                                                   corpus.column("text").to_pylist(), strict=True)]
    started = time.perf_counter()
    vectors = encoder.encode(passages, max_batch_tokens=cfg.encode_batch_tokens, cache=True)  # mine reuses them
    ctx.throughput["roundtrip_corpus_passages_per_s"] = round(len(passages) / (time.perf_counter() - started), 2)
    ctx.extra["roundtrip_model"] = encoder.model_id
    row_of = {cid: i for i, cid in enumerate(corpus.column("chunk_id").to_pylist())}

    def keep(candidates: list[Candidate]) -> list[bool]:
        queries = encoder.encode([c.query for c in candidates], max_batch_tokens=cfg.encode_batch_tokens)
        return roundtrip_mask(queries, vectors, [row_of[c.chunk_id] for c in candidates], cfg.roundtrip_top_k)

    return keep
