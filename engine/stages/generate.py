"""Stage ``generate``: chunk shards → synthetic query shards (one output shard per chunk shard).

For each chunk shard: LLM prompts for a share of its chunks (the whole shard in one backend call), parsing of
the outputs (unparseable ones quarantined with their raw text), title / inverse-cloze / keyword queries,
filters (normalization, length, verbatim copy, exact and near duplicates, round-trip consistency under the
base embedding model), a train/val split by document, then one atomic shard write. A killed run resumes at
the first unwritten shard; exact duplicates are checked against the queries of the shards already written, so
a resumed run writes the same rows as an uninterrupted one (given a deterministic generator).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from engine.configs.generate import GenerateConfig
from engine.data.schemas import QUERIES, passage_text
from engine.data.shards import iter_shards, read_table
from engine.generation.backends import LLMBackend, Sampling, Usage, open_backend
from engine.generation.filters import (
    RULES,
    Candidate,
    FilterSettings,
    dedup_key,
    filter_candidates,
    roundtrip_mask,
)
from engine.generation.parsing import parse_queries
from engine.generation.prompts import PromptBuilder, build_prompts, prompt_hash
from engine.generation.sources import KeywordIdf, ict_queries, keyword_query, stable_fraction, title_query
from engine.progress import track
from engine.runner import StageContext, StageFailed

log = logging.getLogger("embedforge.generate")


def run(ctx: StageContext) -> None:
    cfg: GenerateConfig = ctx.config
    seed = ctx.job.seed
    writer = ctx.writer()
    chunk_dir = ctx.input_dir("chunk")
    corpus = read_table(chunk_dir, columns=["chunk_id", "title", "text"])
    if corpus.num_rows == 0:
        raise StageFailed("generate: the chunk output has no rows")
    pending = [name for name, _ in iter_shards(chunk_dir, columns=["chunk_id"]) if not writer.done(name)]

    # Corpus-wide parts, built once per run: keyword idf, corpus embeddings for the round-trip filter.
    idf = KeywordIdf.fit(corpus.column("text").to_pylist()) if "keyword" in cfg.sources else None
    roundtrip = _roundtrip_filter(ctx, corpus) if cfg.roundtrip_top_k > 0 and pending else None
    settings = FilterSettings(cfg.min_words, cfg.max_words, cfg.max_copied_words, ("ict",),
                              cfg.near_duplicate_jaccard, cfg.roundtrip_top_k, tuple(cfg.roundtrip_kinds))
    sampling = Sampling(cfg.samples_per_prompt, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    builders = _prompt_builders(cfg, sampling)
    llm_prompt_hash = prompt_hash({label: b.hash() for label, b in builders.items()})
    source_hashes = {"title": prompt_hash({"title": 1}),
                     "ict": prompt_hash({"ict": cfg.ict_per_chunk, "min_words": cfg.ict_min_words}),
                     "keyword": prompt_hash({"keyword": cfg.keyword_terms})}
    seen = {dedup_key(q) for name, t in iter_shards(ctx.out_dir, columns=["query"]) for q in t.column("query").to_pylist()}
    backend: LLMBackend | None = None
    usage = Usage()

    try:
        with track("generate", total=corpus.num_rows, unit="chunks") as progress:
            for name, chunks in iter_shards(chunk_dir, columns=["chunk_id", "doc_id", "idx", "title", "text"]):
                if writer.done(name):
                    progress.advance(chunks.num_rows)
                    continue
                rows = chunks.to_pylist()
                candidates: list[Candidate] = []
                quarantine: list[dict[str, Any]] = []
                stats: Counter = Counter(rows_in=len(rows))

                # 1. LLM queries: the whole shard's prompts in one backend call.
                if "llm" in cfg.sources:
                    picked = [c for c in rows if stable_fraction("llm", c["chunk_id"]) < cfg.llm_share]
                    prompts = build_prompts(picked, builders)
                    if prompts and backend is None:
                        backend = _open(ctx, cfg)
                    started = time.perf_counter()
                    completions = backend.generate([p.messages for p in prompts], sampling, seed) if prompts else []
                    usage.add(completions, time.perf_counter() - started)
                    stats.update(prompts=len(prompts), prompt_tokens=sum(c.prompt_tokens for c in completions),
                                 output_tokens=sum(c.output_tokens for c in completions))
                    for prompt, completion in zip(prompts, completions, strict=True):
                        chunk = picked[prompt.chunk_index]
                        where = f"{name}:{chunk['chunk_id']}:{prompt.label}"
                        if completion.error:
                            quarantine.append({"source": where, "reason": "request_failed", "error": completion.error})
                            stats["request_failed"] += 1
                        for raw in completion.texts:
                            queries = parse_queries(raw, limit=prompt.expected)
                            if not queries:
                                quarantine.append({"source": where, "reason": "unparseable", "raw": raw})
                                stats["unparseable"] += 1
                            candidates += [Candidate(chunk["chunk_id"], chunk["doc_id"], chunk["text"], q, "llm",
                                                     backend.generator_id, llm_prompt_hash) for q in queries]

                # 2. Non-LLM sources.
                for chunk in rows:
                    made: list[tuple[str, str]] = []
                    if "title" in cfg.sources and (q := title_query(chunk["idx"], chunk["title"])):
                        made.append(("title", q))
                    if "ict" in cfg.sources:
                        made += [("ict", q) for q in ict_queries(chunk["chunk_id"], chunk["text"], cfg.ict_per_chunk,
                                                                 cfg.ict_min_words, seed)]
                    if idf is not None and (q := keyword_query(chunk["text"], idf, cfg.keyword_terms)):
                        made.append(("keyword", q))
                    candidates += [Candidate(chunk["chunk_id"], chunk["doc_id"], chunk["text"], q, kind,
                                             f"{kind}-source", source_hashes[kind]) for kind, q in made]
                stats.update(f"candidates_{c.kind}" for c in candidates)
                stats["candidates"] = len(candidates)

                # 3. Filters, counted per rule.
                kept, dropped = filter_candidates(candidates, settings, seen, roundtrip)
                stats.update({f"dropped_{rule}": n for rule, n in dropped.items()})
                stats.update(f"kept_{c.kind}" for c in kept)

                # 4. Split by document, ids, write.
                table = pa.Table.from_pylist([_row(c, seed, cfg.val_share) for c in kept], schema=QUERIES)
                writer.write(name, table, stats=dict(stats), quarantine=quarantine)
                progress.advance(len(rows), tokens=stats["output_tokens"])
    finally:
        if backend is not None:
            backend.close()

    if usage.prompts:
        ctx.throughput.update(usage.rates())
    ctx.extra["generate"] = {"backend": cfg.backend if "llm" in cfg.sources else None,
                             "generator": backend.generator_id if backend else None,
                             "prompt_hash": llm_prompt_hash, "filter_rules": list(RULES),
                             "retries": getattr(backend, "retries", 0)}


def _open(ctx: StageContext, cfg: GenerateConfig) -> LLMBackend:
    model = cfg.model if cfg.backend == "openai" else ctx.resolve_model(cfg.model)
    log.info("generate: %s backend, model %s", cfg.backend, model)
    return open_backend(cfg, model, ctx.job.seed)


def _prompt_builders(cfg: GenerateConfig, sampling: Sampling) -> dict[str, PromptBuilder]:
    params = sampling.as_dict()
    if cfg.prompt_style == "list":
        return {"list": PromptBuilder(cfg.prompt, cfg.system_prompt, cfg.queries_per_chunk, cfg.max_passage_chars,
                                      params)}
    return {label: PromptBuilder(t, cfg.system_prompt, 1, cfg.max_passage_chars, params)
            for label, t in cfg.type_prompts.items()}


def _roundtrip_filter(ctx: StageContext, corpus: pa.Table):  # noqa: ANN202 - returns a closure
    """Encode the corpus once; the returned function keeps candidates whose chunk ranks in the top k."""
    from engine.retrieval.encoder import get_encoder

    cfg: GenerateConfig = ctx.config
    encoder = get_encoder(ctx.resolve_model(cfg.roundtrip_model), device=ctx.job.device)
    passages = [passage_text(t, x) for t, x in zip(corpus.column("title").to_pylist(),
                                                   corpus.column("text").to_pylist(), strict=True)]
    started = time.perf_counter()
    vectors = encoder.encode(passages, max_batch_tokens=cfg.encode_batch_tokens)
    ctx.throughput["roundtrip_corpus_passages_per_s"] = round(len(passages) / (time.perf_counter() - started), 2)
    ctx.extra["roundtrip_model"] = encoder.model_id
    row_of = {cid: i for i, cid in enumerate(corpus.column("chunk_id").to_pylist())}

    def keep(candidates: list[Candidate]) -> list[bool]:
        queries = encoder.encode([c.query for c in candidates], max_batch_tokens=cfg.encode_batch_tokens)
        return roundtrip_mask(queries, vectors, [row_of[c.chunk_id] for c in candidates], cfg.roundtrip_top_k)

    return keep


def _row(c: Candidate, seed: int, val_share: float) -> dict[str, Any]:
    qid = hashlib.blake2b(f"{c.chunk_id}\x1f{c.kind}\x1f{c.query}".encode(), digest_size=8).hexdigest()
    split = "val" if stable_fraction("split", c.doc_id) < val_share else "train"
    return {"query_id": f"q-{qid}", "chunk_id": c.chunk_id, "doc_id": c.doc_id, "query": c.query, "kind": c.kind,
            "generator": c.generator, "prompt_hash": c.prompt_hash, "seed": seed, "split": split}
