"""The evaluation harness: datasets × models × Matryoshka dimensions × quantizations → result rows.

Per dense model and dataset, the corpus and the queries are encoded once at the model's full dimension (through
the shared encoder); each dimension is a truncation + re-normalization of those vectors
(:func:`embedforge.encoding.encoder.truncate_normalize`), as a Matryoshka model is deployed. Per dimension and
quantization a row holds the quality metrics (pytrec_eval), the search latency and the index size; the float
row also holds HNSW latency, recall of HNSW's top 10 against exact search, and the HNSW index size. Query
encode latency and corpus throughput do not depend on the truncation, so they are measured once per model and
repeated on its rows. ``bm25`` is a model too (one row per dataset, ``dim`` null). With ``hybrid``, each dense
model's float search at each dimension is also fused with BM25's top ``top_k`` (:mod:`embedforge.search.fusion`)
into rows named ``<model>+bm25-<fusion>``.

Finished (dataset, model) results are cached as JSON under ``cache_dir`` so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import BeirDataset
from embedforge.data.shards import atomic_write_json
from embedforge.evaluation.latency import percentiles, query_encode_latency, search_latency, time_calls
from embedforge.evaluation.metrics import paired_test
from embedforge.evaluation.retrieval_evaluator import RetrievalEvaluator
from embedforge.search import faiss_indexes
from embedforge.search.faiss_indexes import search_threads
from embedforge.search.passages import best_passage, passages_to_fetch
from embedforge.search.quantize import QuantizedSearcher

log = logging.getLogger("embedforge.evaluate")

BM25 = "bm25"


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: a display ``label`` and a ``ref`` (packaged name, local directory, or ``bm25``)."""

    label: str
    ref: str

    @property
    def is_bm25(self) -> bool:
        return self.ref.lower() == BM25


def parse_model_ref(text: str) -> ModelRef:
    """``tuned=runs/x/model`` → label ``tuned``; ``runs/x/model`` → label ``model``; ``bm25`` → bm25."""
    label, sep, ref = text.partition("=")
    if sep and label and "/" not in label:
        return ModelRef(label, ref)
    ref = text.rstrip("/")
    return ModelRef(Path(ref).name if ("/" in ref or Path(ref).exists()) else ref, ref)


@dataclass
class EvalResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_query: list[dict[str, Any]] = field(default_factory=list)
    significance: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, dict[str, list[list[Any]]]] = field(default_factory=dict)
    """Ranked lists of the float (and BM25, hybrid) rows: ``"dataset/model[/d<dim>]"`` → query id → [[doc id,
    score], …] best first, for TREC run files (:func:`embedforge.evaluation.report.write_trec_runs`)."""

    def extend(self, other: EvalResult) -> None:
        self.rows += other.rows
        self.per_query += other.per_query
        self.runs.update(other.runs)


def ranked_lists(dataset: BeirDataset, ids: np.ndarray, scores: np.ndarray) -> dict[str, list[list[Any]]]:
    """Row-aligned ``(ids, scores)`` of a search → query id → [[doc id, score], …] (missing hits, id -1, dropped)."""
    return {q: [[dataset.corpus_ids[int(i)], round(float(s), 6)] for i, s in zip(ids[n], scores[n], strict=True)
                if i >= 0] for n, q in enumerate(dataset.query_ids)}


def _per_query_rows(base: dict[str, Any], per_query: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [{**base, "query_id": q, **m} for q, m in per_query.items()]


@dataclass
class LexicalRun:
    """BM25 over one dataset: the index, its build time and its top ``top_k`` per query (built once, used by the
    ``bm25`` row and by every hybrid row)."""

    index: Any
    build_s: float
    scores: np.ndarray
    ids: np.ndarray

    @property
    def matched(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` with documents that match no query term left out (id ``-1``), for fusion."""
        return self.scores, np.where(self.scores > 0, self.ids, -1)


def bm25_run(dataset: BeirDataset, cfg: EvaluateConfig) -> LexicalRun:
    from embedforge.search.bm25 import BM25Retriever

    t0 = time.perf_counter()
    bm = BM25Retriever(dataset.corpus_texts, k1=cfg.bm25_k1, b=cfg.bm25_b, stemmer=cfg.bm25_stemmer)
    build_s = time.perf_counter() - t0
    return LexicalRun(bm, build_s, *bm.search(dataset.query_texts, cfg.top_k))


def _bm25(dataset: BeirDataset, model: ModelRef, cfg: EvaluateConfig, run: LexicalRun) -> EvalResult:
    bm = run.index
    evaluator = RetrievalEvaluator(dataset, cfg.hit_ks)
    metrics = evaluator(run.ids, run.scores, min_score=0.0)
    base = {"dataset": dataset.name, "model": model.label, "dim": None, "quantization": "none"}
    row = {**base, **metrics, "encode_ms_p50": None, "n_queries": len(dataset.query_ids),
           "n_docs": len(dataset.corpus_ids), "index_bytes": bm.index_bytes, "index_build_s": run.build_s,
           "model_ref": model.ref, "k1": cfg.bm25_k1, "b": cfg.bm25_b,
           "stemmer": cfg.bm25_stemmer}
    if cfg.latency:
        lat = [dataset.query_texts[i] for i in range(min(len(dataset.query_texts), cfg.search_latency_queries))]
        stats = percentiles(time_calls(lambda t: bm.search([t], 10), lat))
        row.update(search_ms_p50=stats["p50"], search_ms_p99=stats["p99"])
    else:
        row.update(search_ms_p50=None, search_ms_p99=None)
    return EvalResult([row], _per_query_rows(base, evaluator.per_query),
                      runs={f"{dataset.name}/{model.label}": ranked_lists(dataset, run.ids, run.scores)})


def _dense(dataset: BeirDataset, model: ModelRef, cfg: EvaluateConfig, seed: int, device: str,
           bm25: Callable[[], LexicalRun] | None = None) -> EvalResult:
    from embedforge.encoding.encoder import get_encoder, truncate_normalize

    encoder = get_encoder(model.ref, device=device, dtype=cfg.dtype, role="document")
    query_encoder = get_encoder(model.ref, device=device, dtype=cfg.dtype, role="query")  # a Router's query route
    dims = cfg.dims or [encoder.dim]
    too_big = [d for d in dims if d > encoder.dim]
    if too_big:
        raise ValueError(f"dims {too_big} exceed the {encoder.dim} dimensions of model '{model.label}' ({model.ref})")
    units, owner = _retrieval_units(dataset, model, cfg)
    hits_before = encoder.stats.get("cache_hits", 0)
    t0 = time.perf_counter()
    corpus_full = encoder.encode(units, normalize=False, cache=cfg.cache)
    corpus_s = time.perf_counter() - t0
    corpus_hits = encoder.stats.get("cache_hits", 0) - hits_before
    queries_full = query_encoder.encode(dataset.query_texts, normalize=False, cache=cfg.cache)
    shared: dict[str, Any] = {"model_ref": model.ref, "model_id": encoder.folder_id, "model_dim": encoder.dim,
                              "n_queries": len(dataset.query_ids), "n_docs": len(dataset.corpus_ids),
                              "score_by": cfg.score_by, "n_passages": len(units),
                              "corpus_encode_s": corpus_s, "corpus_cache_hits": corpus_hits,
                              "corpus_docs_per_s": None if corpus_hits else len(dataset.corpus_ids) / max(corpus_s, 1e-9)}
    if cfg.latency:
        shared.update(query_encode_latency(lambda texts: query_encoder.encode(texts), dataset.query_texts,
                                           sample=cfg.latency_queries, seed=seed))
    log.info("%s / %s: encoded %d docs in %.1fs (%d from the embedding cache)", dataset.name, model.label,
             len(dataset.corpus_ids), corpus_s, corpus_hits)
    out = EvalResult()
    evaluator = RetrievalEvaluator(dataset, cfg.hit_ks)
    grouped = cfg.score_by == "best_passage"
    fetch10 = passages_to_fetch(owner, 10)

    def top10(searcher: QuantizedSearcher, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What a user's top-10 search does: documents, or passages grouped into documents."""
        if not grouped:
            return searcher.search(q, 10, prebuilt=True)
        return best_passage(*searcher.search(q, fetch10, prebuilt=True), owner, 10)

    for dim in dims:
        corpus = truncate_normalize(corpus_full, dim)
        queries = truncate_normalize(queries_full, dim)
        for quant in cfg.quantizations:
            searcher = QuantizedSearcher(corpus, quant, cfg.rescore_multiplier, device)
            if grouped:
                unit_scores, unit_ids = searcher.search(queries, passages_to_fetch(owner, cfg.top_k))
                scores, ids = best_passage(unit_scores, unit_ids, owner, cfg.top_k)
            else:
                scores, ids = unit_scores, unit_ids = searcher.search(queries, cfg.top_k)
            metrics = evaluator(ids)
            base = {"dataset": dataset.name, "model": model.label, "dim": dim, "quantization": quant}
            row = {**base, **metrics, **shared, "index_bytes": searcher.bytes}
            if cfg.latency:
                with search_threads(1):
                    lat = search_latency(lambda q, s=searcher: top10(s, q), queries, cfg.search_latency_queries, seed)
                row.update(search_ms_p50=lat["p50"], search_ms_p99=lat["p99"])
                if quant == "none":
                    row.update(_hnsw(corpus, queries, unit_ids, cfg, seed))
            else:
                row.update(search_ms_p50=None, search_ms_p99=None)
            row.setdefault("encode_ms_p50", None)
            out.rows.append(row)
            out.per_query += _per_query_rows(base, evaluator.per_query)
            if quant == "none":
                out.runs[f"{dataset.name}/{model.label}/d{dim}"] = ranked_lists(dataset, ids, scores)
            log.info("%s / %s / %d / %s: nDCG@10 %.4f", dataset.name, model.label, dim, quant, metrics["ndcg_at_10"])
            if quant == "none" and cfg.hybrid and bm25 is not None:
                out.extend(_hybrid(dataset, model, dim, (scores, ids), bm25(), evaluator, row, cfg))
    return out


def _retrieval_units(dataset: BeirDataset, model: ModelRef, cfg: EvaluateConfig) -> tuple[list[str], np.ndarray]:
    """What the dense model indexes: the documents (``score_by: document``; each its own owner), or their
    passages and the document row owning each (``score_by: best_passage``)."""
    n = len(dataset.corpus_ids)
    if cfg.score_by == "document":
        return dataset.corpus_texts, np.arange(n)
    from embedforge.data.chunking import TokenCounter, passages
    from embedforge.models import resolve_model

    counter = TokenCounter(resolve_model(model.ref))
    max_tokens = cfg.passage_tokens or counter.max_seq_length or 512
    titles, bodies = dataset.corpus_titles, dataset.corpus_bodies
    if titles is None or bodies is None:
        titles, bodies = [""] * n, dataset.corpus_texts
    texts, owner = passages(titles, bodies, counter, max_tokens)
    log.info("%s / %s: %d documents → %d passages of at most %d tokens", dataset.name, model.label, n, len(texts),
             max_tokens)
    return texts, np.asarray(owner)


def _hybrid(dataset: BeirDataset, model: ModelRef, dim: int, dense: tuple[np.ndarray, np.ndarray],
            bm25: LexicalRun, evaluator: RetrievalEvaluator, dense_row: dict[str, Any],
            cfg: EvaluateConfig) -> EvalResult:
    """Rows of the dense model's float search at ``dim`` fused with BM25, one per fusion method; the index of a
    hybrid row is both indexes."""
    from embedforge.search.fusion import reciprocal_rank_fusion, zscore_fusion

    out = EvalResult()
    lexical = bm25.matched
    for fusion, weight in itertools.product(cfg.hybrid, cfg.bm25_weights):
        if fusion == "rrf":
            fused, ids = reciprocal_rank_fusion([dense[1], lexical[1]], cfg.top_k, rrf_k=cfg.rrf_k,
                                                weights=[1.0, weight])
        else:
            fused, ids = zscore_fusion([dense, lexical], cfg.top_k, weights=[1.0, weight])
        label = f"{model.label}+bm25-{fusion}" + ("" if weight == 1.0 else f"-w{weight:g}")
        metrics = evaluator(ids)
        base = {"dataset": dataset.name, "model": label, "dim": dim, "quantization": "none"}
        out.rows.append({**base, **metrics, "fusion": fusion, "bm25_weight": weight, "fused_with": BM25,
                         "dense_model": model.label,
                         **{k: dense_row[k] for k in ("model_ref", "model_id", "n_queries", "n_docs")},
                         "encode_ms_p50": None, "search_ms_p50": None, "search_ms_p99": None,
                         "index_bytes": dense_row["index_bytes"] + bm25.index.index_bytes})
        out.per_query += _per_query_rows(base, evaluator.per_query)
        out.runs[f"{dataset.name}/{base['model']}/d{dim}"] = ranked_lists(dataset, ids, fused)
        log.info("%s / %s / %d: nDCG@10 %.4f", dataset.name, base["model"], dim, metrics["ndcg_at_10"])
    return out


def _hnsw(corpus: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray, cfg: EvaluateConfig,
          seed: int) -> dict[str, float]:
    t0 = time.perf_counter()
    index, _ = faiss_indexes.build("hnsw", corpus, hnsw_m=cfg.hnsw_m, ef_construction=200)
    index.hnsw.efSearch = cfg.hnsw_ef_search
    build_s = time.perf_counter() - t0
    k = min(10, corpus.shape[0])
    _, approx = index.search(queries, k)
    overlap = [len(set(a) & set(e[:k])) / k for a, e in zip(approx, exact_ids, strict=True)]
    with search_threads(1):
        lat = search_latency(lambda q: index.search(q, k), queries, cfg.search_latency_queries, seed)
    return {"hnsw_search_ms_p50": lat["p50"], "hnsw_search_ms_p99": lat["p99"], "hnsw_index_bytes": faiss_indexes.index_bytes(index),
            "hnsw_recall_at_10": float(np.mean(overlap)), "hnsw_build_s": build_s}


_NOT_IN_RESULT = {"cache", "models", "bm25", "datasets", "split", "heldout"}
"""Config fields that do not change a (dataset, model) result (the dataset itself is part of the cache key)."""


def _cache_path(cache_dir: Path, dataset: BeirDataset, model: ModelRef, cfg: EvaluateConfig, seed: int,
                device: str) -> Path:
    """One file per (dataset, model weights, options): a changed option, model or dataset never reuses a stale
    result."""
    from embedforge.models import model_id, resolve_model

    weights = None if model.is_bm25 else model_id(resolve_model(model.ref))  # a retrained model never hits
    key = json.dumps([dataset.name, len(dataset.corpus_ids), len(dataset.query_ids), model.label, model.ref,
                      weights, cfg.model_dump(mode="json", exclude=_NOT_IN_RESULT), seed, device], sort_keys=True,
                     default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset.name}__{model.label}")
    return cache_dir / f"{safe}-{digest}.json"


def evaluate_models(datasets: Sequence[BeirDataset | Callable[[], BeirDataset]], models: Sequence[ModelRef],
                    cfg: EvaluateConfig, *, seed: int = 0, device: str = "auto",
                    cache_dir: Path | None = None) -> EvalResult:
    """Evaluate every model on every dataset (datasets may be loaders, called one at a time) with the ``evaluate``
    stage's config (its ``models`` and ``datasets`` fields are the stage's to resolve; here they are given).

    >>> cfg = EvaluateConfig(dims=[384, 96], quantizations=["none", "int8"], latency=False)
    >>> result = evaluate_models([load_beir("datasets/scifact")], [ModelRef("base", "all-MiniLM-L6-v2")], cfg)
    """
    if cfg.hybrid and "none" not in cfg.quantizations:
        raise ValueError("hybrid rows fuse the float search: add 'none' to the quantizations")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {labels} (name them: label=path)")
    result = EvalResult()
    for item in datasets:
        dataset = item() if callable(item) else item
        lexical: dict[str, LexicalRun] = {}

        def bm25(dataset: BeirDataset = dataset, lexical: dict = lexical) -> LexicalRun:
            if "run" not in lexical:  # built once per dataset, only when a row needs it
                lexical["run"] = bm25_run(dataset, cfg)
            return lexical["run"]

        for model in models:
            cached = _cache_path(cache_dir, dataset, model, cfg, seed, device) if cache_dir else None
            if cached and cached.is_file():
                part = EvalResult(**json.loads(cached.read_text()))
                log.info("%s / %s: cached result reused (%s)", dataset.name, model.label, cached)
            else:
                part = (_bm25(dataset, model, cfg, bm25()) if model.is_bm25
                        else _dense(dataset, model, cfg, seed, device, bm25))
                if cached:
                    atomic_write_json(cached, {"rows": part.rows, "per_query": part.per_query, "runs": part.runs})
            result.extend(part)
    result.significance = significance(result, models, cfg, seed)
    return result


def significance(result: EvalResult, models: Sequence[ModelRef], cfg: EvaluateConfig, seed: int = 0,
                 metric: str = "ndcg_at_10") -> list[dict[str, Any]]:
    """Paired tests of each dense model against the reference model, per dataset × dim × quantization.

    The compared rows get ``ref_model``, ``delta_<metric>``, ``p_value_ttest`` and ``p_value_randomization``.
    """
    dense = [m.label for m in models if not m.is_bm25]
    ref = cfg.reference or (dense[0] if dense else None)
    if ref is None or len(dense) + (1 if any(m.is_bm25 for m in models) else 0) < 2:
        return []
    scores: dict[tuple, dict[str, float]] = {}
    for pq in result.per_query:
        scores.setdefault((pq["dataset"], pq["model"], pq["dim"], pq["quantization"]), {})[pq["query_id"]] = pq[metric]
    tests = []
    for row in result.rows:
        if row["model"] == ref:
            continue
        key = (row["dataset"], ref, row["dim"] if row["dim"] is not None else None, row["quantization"])
        if row["dim"] is None:  # bm25 vs the reference at its full dimension, float
            full = [r["dim"] for r in result.rows if r["model"] == ref and r["dataset"] == row["dataset"]]
            if not full:
                continue
            key = (row["dataset"], ref, max(full), "none")
        reference = scores.get(key)
        candidate = scores.get((row["dataset"], row["model"], row["dim"], row["quantization"]))
        if reference is None or candidate is None:
            continue
        test = paired_test(reference, candidate, n_resamples=cfg.n_resamples, seed=seed)
        row.update({"ref_model": ref, f"delta_{metric}": test["delta"], "p_value_ttest": test["p_value_ttest"],
                    "p_value_randomization": test["p_value_randomization"]})
        tests.append({"dataset": row["dataset"], "model": row["model"], "reference": ref, "dim": row["dim"],
                      "reference_dim": key[2], "quantization": row["quantization"], "metric": metric, **test})
    return tests
