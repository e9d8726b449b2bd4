"""Mine one query shard into triples: the per-shard loop of the ``mine`` stage (:mod:`embedforge.stages.mine`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from embedforge.configs.mine import MineConfig
from embedforge.data.schemas import TRIPLES
from embedforge.encoding.encoder import Encoder
from embedforge.mining.corpus import KnownPositives, MiningCorpus, normalize_text, stable_keys
from embedforge.mining.negatives import NegativeRules, Rescorer, mine_block
from embedforge.mining.report import MiningStats
from embedforge.search.index import SearchIndex


def mine_shard(table: pa.Table, name: str, cfg: MineConfig, rules: NegativeRules, corpus: MiningCorpus,
                known: KnownPositives, encoder: Encoder, index: SearchIndex, cross_encoder: object | None
                ) -> tuple[pa.Table, list[dict], MiningStats, dict[str, int]]:
    """Mine one query shard: ``(triples, quarantine rows, score statistics, counters)``.

    Rows of other splits are counted and left out; empty queries and unknown chunk ids are quarantined. Queries
    go in blocks of ``cfg.query_block``: encoded (each distinct text once), searched, filtered by ``rules``
    (:func:`embedforge.mining.negatives.mine_block`); a query with fewer than ``num_negatives`` survivors is
    kept or quarantined as ``cfg.too_few_negatives`` says.
    """
    rows = table.to_pylist()
    stats = MiningStats()
    quarantine: list[dict] = []
    counters = {"rows_in": len(rows), "rows_other_split": 0, "rows_mined": 0, "queries_short": 0,
                "queries_without_negatives": 0}
    todo = []
    for i, r in enumerate(rows):
        if r.get("split") not in cfg.splits:
            counters["rows_other_split"] += 1
        elif not normalize_text(r["query"] or ""):
            quarantine.append({"source": f"{name}:{i}", "query_id": r["query_id"], "reason": "empty query"})
        elif r["chunk_id"] not in corpus.row_of:
            quarantine.append({"source": f"{name}:{i}", "query_id": r["query_id"], "chunk_id": r["chunk_id"],
                               "reason": "chunk_id not in the chunk corpus"})
        else:
            todo.append(r)
    out: list[dict] = []
    for start in range(0, len(todo), cfg.query_block):
        block = todo[start:start + cfg.query_block]
        queries = [r["query"] for r in block]
        texts = [normalize_text(q) for q in queries]
        qids = [r["query_id"] for r in block]
        pos_ids = known.lookup(stable_keys(texts, "t:"), stable_keys(qids, "i:"))
        rescorer = cross_encoder_rescorer(cross_encoder, queries, corpus, cfg) if cross_encoder else None
        unique, inverse = np.unique(np.array(queries, dtype=object), return_inverse=True)
        vectors = encoder.encode(unique.tolist(), cache=cfg.cache)[inverse]  # a query text with several positives is encoded once
        sel = mine_block(index, vectors, pos_ids, stable_keys(qids, "s:"), corpus.keys, rules, rescorer)
        stats.add_counts(sel.counts)
        own = corpus.rows([r["chunk_id"] for r in block])
        own_score = sel.pos_scores[np.arange(len(block)), (pos_ids == own[:, None]).argmax(axis=1)]
        positives = corpus.take_texts(own)
        flat = sel.ids[sel.ids >= 0]
        neg_ids, neg_texts = iter(corpus.take_ids(flat)), iter(corpus.take_texts(flat))
        for i, r in enumerate(block):
            keep = sel.ids[i] >= 0
            n = int(keep.sum())
            ids, texts = [next(neg_ids) for _ in range(n)], [next(neg_texts) for _ in range(n)]
            if n < rules.num_negatives:
                counters["queries_short"] += 1
                counters["queries_without_negatives"] += int(n == 0)
                if cfg.too_few_negatives == "quarantine":
                    quarantine.append({"source": name, "query_id": r["query_id"], "n_negatives": n,
                                       "reason": f"fewer than {rules.num_negatives} negatives passed the rules"})
                    continue
            stats.positives.add(own_score[i:i + 1])
            stats.negatives.add(sel.scores[i][keep])
            out.append({"query_id": r["query_id"], "query": r["query"], "pos_chunk_id": r["chunk_id"],
                        "positive": positives[i], "neg_chunk_ids": ids, "negatives": texts,
                        "pos_score": float(own_score[i]), "neg_scores": sel.scores[i][keep].tolist()})
    counters["rows_mined"] = len(out)
    return pa.Table.from_pylist(out, schema=TRIPLES), quarantine, stats, counters


def cross_encoder_rescorer(model: object, queries: list[str], corpus: MiningCorpus, cfg: MineConfig) -> Rescorer:
    """Cross-encoder scores for every used (query, candidate) and (query, positive) pair of a block."""

    def score(ids: np.ndarray) -> np.ndarray:
        out = np.full(ids.shape, np.nan, dtype=np.float32)
        where = np.nonzero(ids >= 0)
        if len(where[0]):
            texts = corpus.take_texts(ids[where])
            pairs = [(queries[qi], t) for qi, t in zip(where[0].tolist(), texts, strict=True)]
            out[where] = np.asarray(model.predict(pairs, batch_size=cfg.cross_encoder_batch_size,
                                                  show_progress_bar=False), dtype=np.float32).reshape(-1)
        return out

    return lambda cand_ids, pos_ids: (score(cand_ids), score(pos_ids))
