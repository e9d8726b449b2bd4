"""Latency measurements, bounded so a run stays fast: a sample of queries, timed one call at a time.

- query encoding: ms per call at batch 1 and at batch 64 (p50/p95), through the shared encoder;
- search: ms per single-query call (p50/p99) on a FAISS flat, HNSW or quantized index;
- corpus encoding throughput is measured by the harness on the full corpus encode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def percentiles(samples_ms: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": …, "p95": …, "p99": …}`` of timings in milliseconds."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs} if arr.size else {f"p{q}": float("nan") for q in qs}


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 2) -> list[float]:
    """Milliseconds of ``fn(x)`` for each ``x`` (after ``warmup`` untimed calls on the first inputs)."""
    for x in list(inputs)[:warmup]:
        fn(x)
    out = []
    for x in inputs:
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def sample_indices(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A fixed random sample of ``min(size, n)`` row indices."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False)) if n else np.zeros(0, dtype=np.int64)


def query_encode_latency(encode: Callable[[list[str]], Any], texts: Sequence[str], sample: int = 64,
                         batch: int = 64, batches: int = 3, seed: int = 0) -> dict[str, float]:
    """Query encode ms p50/p95 at batch 1 (``sample`` queries) and at batch ``batch`` (``batches`` calls)."""
    texts = list(texts)
    if not texts:
        return {}
    picked = [texts[i] for i in sample_indices(len(texts), sample, seed)]
    single = percentiles(time_calls(lambda t: encode([t]), picked))
    rng = np.random.default_rng(seed + 1)
    groups = [[texts[i] for i in rng.choice(len(texts), size=batch, replace=len(texts) < batch)]
              for _ in range(batches)]
    batched = percentiles(time_calls(encode, groups, warmup=1))
    return {"encode_ms_p50": single["p50"], "encode_ms_p95": single["p95"],
            f"encode_b{batch}_ms_p50": batched["p50"], f"encode_b{batch}_ms_p95": batched["p95"]}


def search_latency(search: Callable[[np.ndarray], Any], queries: np.ndarray, sample: int = 100,
                   seed: int = 0) -> dict[str, float]:
    """Single-query search ms p50/p99 over a sample of query vectors."""
    rows = [queries[i: i + 1] for i in sample_indices(len(queries), sample, seed)]
    if not rows:
        return {}
    stats = percentiles(time_calls(search, rows))
    return {"p50": stats["p50"], "p99": stats["p99"]}
