"""One chunk shard → its query rows: LLM prompts, parsing of the completions, non-LLM sources, filters, split.

The expensive part, the LLM call, sits between :meth:`QueryMaker.prompts` and :meth:`QueryMaker.shard_rows`, so
the same code serves the local executor (one backend call per shard in this process) and the Ray executor
(:mod:`embedforge.distributed.ray_generate`: the call runs in an actor, everything else here on the driver, in
shard order, which keeps the exact-duplicate filter and the written rows identical).

>>> maker = QueryMaker.build(cfg, seed=42, corpus_texts=texts)                      # doctest: +SKIP
>>> picked, prompts = maker.prompts(rows)                                          # doctest: +SKIP
>>> completions = backend.generate([p.messages for p in prompts], maker.sampling, 42)  # doctest: +SKIP
>>> shard = ShardCompletions(name, rows, picked, prompts, completions, backend.generator_id)  # doctest: +SKIP
>>> table, stats, quarantine = maker.shard_rows(shard, seen, roundtrip)           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from embedforge.configs.generate import GenerateConfig
from embedforge.data.schemas import QUERIES
from embedforge.generation.backends import Completion, Sampling
from embedforge.generation.filters import Candidate, FilterSettings, filter_candidates
from embedforge.generation.parsing import parse_queries
from embedforge.generation.prompts import Prompt, PromptBuilder, build_prompts, prompt_hash
from embedforge.generation.sources import KeywordIdf, ict_queries, keyword_query, stable_fraction, title_query

Roundtrip = Callable[[list[Candidate]], list[bool]]


@dataclass
class ShardCompletions:
    """What an executor hands back for one chunk shard: its rows, the LLM prompts and their completions."""

    name: str
    rows: list[dict[str, Any]]
    picked: list[dict[str, Any]]
    """The chunks that got LLM prompts (``Prompt.chunk_index`` indexes this list)."""
    prompts: list[Prompt]
    completions: list[Completion]
    generator_id: str | None
    """The backend's model name and hash (None when the shard had no prompts)."""


@dataclass
class QueryMaker:
    """The run-wide parts of query making (prompt builders, sampling, keyword idf, filter settings)."""

    cfg: GenerateConfig
    seed: int
    sampling: Sampling
    builders: dict[str, PromptBuilder]
    idf: KeywordIdf | None
    settings: FilterSettings
    source_hashes: dict[str, str]
    """Kind → hash of the settings of the non-LLM sources (the rows' ``prompt_hash``)."""

    @classmethod
    def build(cls, cfg: GenerateConfig, seed: int, corpus_texts: Sequence[str]) -> QueryMaker:
        """Built once per run; ``corpus_texts`` (every chunk's text) fit the keyword source's idf."""
        sampling = Sampling(cfg.samples_per_prompt, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        params = sampling.as_dict()
        if cfg.prompt_style == "list":
            builders = {"list": PromptBuilder(cfg.prompt, cfg.system_prompt, cfg.queries_per_chunk,
                                              cfg.max_passage_chars, params)}
        else:
            builders = {label: PromptBuilder(t, cfg.system_prompt, 1, cfg.max_passage_chars, params)
                        for label, t in cfg.type_prompts.items()}
        idf = KeywordIdf.fit(corpus_texts) if "keyword" in cfg.sources else None
        settings = FilterSettings(cfg.min_words, cfg.max_words, cfg.max_copied_words, ("ict",),
                                  cfg.near_duplicate_jaccard, cfg.roundtrip_top_k, tuple(cfg.roundtrip_kinds))
        source_hashes = {"title": prompt_hash({"title": 1}),
                         "ict": prompt_hash({"ict": cfg.ict_per_chunk, "min_words": cfg.ict_min_words}),
                         "keyword": prompt_hash({"keyword": cfg.keyword_terms})}
        return cls(cfg, seed, sampling, builders, idf, settings, source_hashes)

    @property
    def llm_prompt_hash(self) -> str:
        return prompt_hash({label: b.hash() for label, b in self.builders.items()})

    def prompts(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Prompt]]:
        """The chunks of a shard that get LLM queries (a fixed hash of the chunk id picks them) and their prompts."""
        if "llm" not in self.cfg.sources:
            return [], []
        picked = [c for c in rows if stable_fraction("llm", c["chunk_id"]) < self.cfg.llm_share]
        return picked, build_prompts(picked, self.builders)

    def shard_rows(self, shard: ShardCompletions, seen: set[str], roundtrip: Roundtrip | None
                   ) -> tuple[pa.Table, dict[str, int], list[dict[str, Any]]]:
        """QUERIES rows of a shard, its counters and quarantine; ``seen`` gains the kept queries' keys.

        Call it in shard order: ``seen`` (the exact-duplicate filter's memory) depends on the shards before.
        """
        cfg = self.cfg
        name, rows, picked, prompts, completions = (shard.name, shard.rows, shard.picked, shard.prompts,
                                                    shard.completions)
        candidates: list[Candidate] = []
        quarantine: list[dict[str, Any]] = []
        stats: Counter = Counter(rows_in=len(rows))
        if "llm" in cfg.sources:
            stats.update(prompts=len(prompts), prompt_tokens=sum(c.prompt_tokens for c in completions),
                         output_tokens=sum(c.output_tokens for c in completions))

        # 1. LLM queries, parsed from the completions (unparseable ones are quarantined with their raw text).
        llm_hash = self.llm_prompt_hash
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
                                         str(shard.generator_id), llm_hash) for q in queries]

        # 2. Non-LLM sources.
        for chunk in rows:
            made: list[tuple[str, str]] = []
            if "title" in cfg.sources and (q := title_query(chunk["idx"], chunk["title"])):
                made.append(("title", q))
            if "ict" in cfg.sources:
                made += [("ict", q) for q in ict_queries(chunk["chunk_id"], chunk["text"], cfg.ict_per_chunk,
                                                         cfg.ict_min_words, self.seed)]
            if self.idf is not None and (q := keyword_query(chunk["text"], self.idf, cfg.keyword_terms)):
                made.append(("keyword", q))
            candidates += [Candidate(chunk["chunk_id"], chunk["doc_id"], chunk["text"], q, kind, f"{kind}-source",
                                     self.source_hashes[kind]) for kind, q in made]
        stats.update(f"candidates_{c.kind}" for c in candidates)
        stats["candidates"] = len(candidates)

        # 3. Filters, counted per rule.
        kept, dropped = filter_candidates(candidates, self.settings, seen, roundtrip)
        stats.update({f"dropped_{rule}": n for rule, n in dropped.items()})
        stats.update(f"kept_{c.kind}" for c in kept)

        # 4. Split by document and ids.
        table = pa.Table.from_pylist([query_row(c, self.seed, cfg.val_share) for c in kept], schema=QUERIES)
        return table, dict(stats), quarantine


def query_row(c: Candidate, seed: int, val_share: float) -> dict[str, Any]:
    """A QUERIES row: the id hashes chunk, kind and query; the split is a fixed hash of the document id."""
    qid = hashlib.blake2b(f"{c.chunk_id}\x1f{c.kind}\x1f{c.query}".encode(), digest_size=8).hexdigest()
    split = "val" if stable_fraction("split", c.doc_id) < val_share else "train"
    return {"query_id": f"q-{qid}", "chunk_id": c.chunk_id, "doc_id": c.doc_id, "query": c.query, "kind": c.kind,
            "generator": c.generator, "prompt_hash": c.prompt_hash, "seed": seed, "split": split}
