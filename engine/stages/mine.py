"""Stage ``mine``: QUERIES + CHUNKS → TRIPLES (query, positive, hard negatives with scores), one shard per query shard.

1. The chunk corpus is embedded once with the base model into ``corpus_vectors.npy`` (memory-mapped, resumable)
   and indexed (faiss-gpu / faiss-cpu / torch, exact order; IVF optionally).
2. Every (query text, chunk) and (query id, chunk) pair is indexed as a known positive.
3. Query shards stream through in blocks: embed, search, apply the rules of :mod:`embedforge.mining.negatives`,
   write the shard with its statistics. Only the configured splits (``train``) are mined; other rows are left out
   and counted (the train stage validates on the ``val`` queries of ``generate`` directly).
4. The manifest gets score distributions and the share each rule removed; ``mine_scores.png`` plots them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from embedforge import device as dev
from embedforge.configs.mine import MineConfig
from embedforge.data.shards import iter_shards, list_shards
from embedforge.encoding.encoder import get_encoder
from embedforge.mining.corpus import (
    KnownPositives,
    MiningCorpus,
    corpus_vectors,
    load_mining_corpus,
    normalize_text,
    stable_keys,
)
from embedforge.mining.negatives import NegativeRules
from embedforge.mining.report import MiningStats, plot_stats
from embedforge.mining.shard import mine_shard
from embedforge.progress import track
from embedforge.search.index import build_index
from embedforge.stages.base import StageContext, StageFailed

QUERY_COLUMNS = ["query_id", "chunk_id", "query", "split"]


def run(ctx: StageContext) -> None:
    cfg: MineConfig = ctx.config
    queries_dir = _queries_dir(ctx, cfg)
    try:
        corpus = load_mining_corpus(ctx.input_dir("chunk"))
    except ValueError as exc:
        raise StageFailed(f"mine: {exc}") from exc
    known, n_queries = _known_positives(queries_dir, corpus)

    t0 = time.perf_counter()
    encoder = get_encoder(ctx.resolve_model(cfg.model), device=ctx.job.device, dtype=cfg.dtype)
    vectors = corpus_vectors(ctx.out_dir / "corpus_vectors.npy", corpus, lambda t: encoder.encode(t, cache=cfg.cache),
                             encoder.model_id, encoder.dim, cfg.encode_block)
    ctx.throughput["corpus_seconds"] = round(time.perf_counter() - t0, 3)
    kind = "ivf" if cfg.index == "ivf" or (cfg.index == "auto" and len(corpus) >= cfg.ivf_min_corpus) else "flat"
    index = build_index(vectors, cfg.backend, kind, nlist=cfg.ivf_nlist, nprobe=cfg.ivf_nprobe, seed=ctx.job.seed)
    ctx.extra["search"] = {"backend": index.backend, "index": kind, "corpus_chunks": len(corpus), "dim": index.dim,
                           "bf16_candidates": index.bf16 is not None, "model_id": encoder.model_id}
    rules = NegativeRules(num_negatives=cfg.num_negatives, range_min=cfg.range_min, range_max=cfg.range_max,
                          sampling=cfg.sampling, relative_margin=cfg.relative_margin,
                          absolute_margin=cfg.absolute_margin, max_score=cfg.max_score, min_score=cfg.min_score,
                          exclude_same_doc=cfg.exclude_same_doc, exclude_equal_text=cfg.exclude_equal_text,
                          seed=ctx.job.seed)
    cross_encoder = _load_cross_encoder(cfg, ctx.job.device) if cfg.cross_encoder else None

    writer = ctx.writer()
    totals = MiningStats()
    t1 = time.perf_counter()
    mined = 0
    with track("mine", total=n_queries, unit="queries") as progress:
        for name, table in iter_shards(queries_dir, columns=QUERY_COLUMNS):
            stats_path = ctx.out_dir / "mine_stats" / f"{name.removesuffix('.parquet')}.json"
            if writer.done(name) and stats_path.is_file():
                totals.merge(MiningStats.load(stats_path))
                progress.advance(table.num_rows)
                continue
            triples, quarantine, stats, counters = mine_shard(table, name, cfg, rules, corpus, known, encoder,
                                                               index, cross_encoder)
            stats.save(stats_path)
            writer.write(name, triples, stats=counters, quarantine=quarantine)
            totals.merge(stats)
            mined += counters["rows_mined"]
            progress.advance(table.num_rows)
    seconds = time.perf_counter() - t1
    ctx.throughput["queries_per_s"] = round(mined / max(seconds, 1e-9), 1)
    ctx.extra["mining"] = {"rules": {k: v for k, v in rules.__dict__.items()}, **totals.report()}
    if cfg.plot:
        plot_stats(totals, ctx.out_dir / "mine_scores.png", f"mine: {ctx.job.name}")


def _queries_dir(ctx: StageContext, cfg: MineConfig) -> Path:
    if cfg.queries_path:
        path = Path(cfg.queries_path)
        if not path.exists():
            raise StageFailed(f"mine: queries_path '{path}' does not exist")
    elif ctx.has_input("generate"):
        path = ctx.input_dir("generate")
    else:
        raise StageFailed("mine needs queries: add a 'generate' stage to the job or set stages.mine.queries_path")
    shards = list_shards(path)
    if not shards:
        raise StageFailed(f"mine: no query shards in {path}")
    missing = set(QUERY_COLUMNS) - set(pq.read_schema(shards[0]).names)
    if missing:
        raise StageFailed(f"mine: {shards[0]} lacks the QUERIES columns {sorted(missing)} (it needs {QUERY_COLUMNS})")
    return path


def _known_positives(queries_dir: Path, corpus: MiningCorpus) -> tuple[KnownPositives, int]:
    """Every (query text key, chunk row) and (query id key, chunk row) pair over all splits."""
    keys, rows, n = [], [], 0
    for _, table in iter_shards(queries_dir, columns=["query_id", "chunk_id", "query"]):
        texts = [normalize_text(q) for q in table.column("query").to_pylist()]
        chunk_rows = corpus.rows(table.column("chunk_id").to_pylist())
        chunk_rows[np.array([not t for t in texts], dtype=bool)] = -1  # empty queries are quarantined later
        keys += [stable_keys(texts, "t:"), stable_keys(table.column("query_id").to_pylist(), "i:")]
        rows += [chunk_rows, chunk_rows]
        n += table.num_rows
    if n == 0:
        raise StageFailed(f"mine: the query shards in {queries_dir} have no rows")
    return KnownPositives.from_pairs(np.concatenate(keys), np.concatenate(rows)), n


def _load_cross_encoder(cfg: MineConfig, device: str) -> object:
    """The CrossEncoder named by ``cross_encoder``: a local directory, a packaged name, or a hub id found in the
    Hugging Face cache (or downloaded when online), resolved like every other model of a job."""
    from embedforge.models import ModelNotFound, resolve_model

    try:
        path = resolve_model(cfg.cross_encoder or "")
    except ModelNotFound as exc:
        raise StageFailed(f"mine: cross_encoder: {exc}") from None
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise StageFailed(f"mine: cross_encoder '{cfg.cross_encoder}' ({path}) is not a model directory with a "
                          "config.json")
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device=str(dev.device(device)), local_files_only=True)
