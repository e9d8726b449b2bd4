"""Stage ``chunk``: document shards → chunk shards, token-aware, one output shard per input shard.

Every chunk keeps ``doc_id``, ``doc_version`` and its character offsets, so any later row (query, triple,
embedding) maps back through ``chunk_id`` to an exact document version. Chunks are bounded in tokens and in
characters; over-long words are cut and counted (``long_words_split``, ``long_word_chars`` in the manifest). A
title-only document (empty text) is one chunk holding its title.
"""

from __future__ import annotations

from dataclasses import asdict

import pyarrow as pa

from embedforge.configs.chunk import ChunkConfig
from embedforge.data.chunking import ChunkStats, TokenCounter, document_chunks
from embedforge.data.schemas import CHUNKS
from embedforge.data.shards import iter_shards
from embedforge.progress import track
from embedforge.stages.base import StageContext, StageFailed


def run(ctx: StageContext) -> None:
    cfg: ChunkConfig = ctx.config
    counter = TokenCounter(ctx.resolve_model(cfg.tokenizer))
    writer = ctx.writer()
    shards = list(iter_shards(ctx.input_dir("ingest"), columns=["doc_id", "doc_version", "title", "text"]))
    if not shards:
        raise StageFailed("chunk: the ingest output has no shards")
    total_docs = sum(t.num_rows for _, t in shards)
    with track("chunk", total=total_docs, unit="docs") as progress:
        for name, docs in shards:
            if writer.done(name):
                progress.advance(docs.num_rows)
                continue
            rows = []
            stats = ChunkStats()
            titles = docs.column("title").to_pylist()
            title_tokens = counter.count([t or "" for t in titles])
            for doc, n_title in zip(docs.to_pylist(), title_tokens, strict=True):
                chunks = document_chunks(doc["title"], doc["text"], counter, cfg.max_tokens, cfg.overlap_tokens,
                                         cfg.min_tokens, cfg.max_chars, cfg.max_word_chars, stats, n_title)
                for c in chunks:
                    rows.append({"chunk_id": f"{doc['doc_version'][:16]}-{c.idx}", "doc_id": doc["doc_id"],
                                 "doc_version": doc["doc_version"], "idx": c.idx, "title": doc["title"],
                                 "text": doc["text"][c.start:c.end], "start_char": c.start, "end_char": c.end,
                                 "n_tokens": c.n_tokens})
                progress.advance(1)
            writer.write(name, pa.Table.from_pylist(rows, schema=CHUNKS),
                         stats={"rows_in": docs.num_rows, **asdict(stats)})  # summed into the manifest's counts
    ctx.extra["max_tokens_effective"] = limit = min(cfg.max_tokens, counter.max_seq_length or cfg.max_tokens)
    ctx.extra["max_chars_effective"] = cfg.max_chars or 16 * limit
