"""Every FAISS index embedforge builds, built here: flat, IVF-flat, HNSW and IVF-PQ, inner product.

The search API (:mod:`embedforge.search.index`: flat and IVF), the index export (:mod:`embedforge.search.export`:
flat, HNSW, IVF-PQ) and the evaluation's HNSW and float-latency indexes all call :func:`new_index` and
:func:`fill`, so list counts, PQ shapes, training samples and seeds follow one set of rules.

>>> index, params = new_index("ivfpq", dim=384, rows=1_000_000)
>>> fill(index, blocks_of_vectors, train_sample=sample)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from embedforge import device as dev

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
"""Index kinds :func:`new_index` builds (``ivf`` is IVF with flat lists: approximate lists, exact scores)."""


def faiss_module(feature: str = "FAISS search") -> Any:
    """The ``faiss`` module, with an install hint when it is missing."""
    return dev.optional_import("faiss", feature)


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: ~4·√n, with at least 39 training points per list (faiss's minimum)."""
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


def ivfpq_params(n: int, dim: int, nlist: int | None = None, pq_m: int | None = None) -> tuple[int, int, int]:
    """``(nlist, m, nbits)`` that train on ``n`` vectors: :func:`default_nlist` lists, m | dim, 2^nbits ≤ n."""
    m = pq_m or next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
    if dim % m:
        raise ValueError(f"index.pq_m={m} must divide the dimension {dim}")
    nbits = max(1, min(8, int(math.log2(max(n, 2)))))
    return nlist or default_nlist(n), m, nbits


def new_index(kind: str, dim: int, rows: int, *, nlist: int | None = None, hnsw_m: int = 32,
              ef_construction: int = 80, pq_m: int | None = None,
              seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """An empty inner-product index of ``kind`` for ``rows`` vectors of ``dim``, and its parameters.

    ``ivf`` and ``ivfpq`` still need training (:func:`fill` with ``train_sample``); ``seed`` seeds their k-means
    (faiss's own default when ``None``).
    """
    faiss = faiss_module()
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index, {"M": hnsw_m, "efConstruction": ef_construction}
    if kind == "ivf":
        n_list = nlist or default_nlist(rows)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_list, faiss.METRIC_INNER_PRODUCT)
        if seed is not None:
            index.cp.seed = seed
        return index, {"nlist": n_list}
    if kind == "ivfpq":
        n_list, m, nbits = ivfpq_params(rows, dim, nlist, pq_m)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, n_list, m, nbits, faiss.METRIC_INNER_PRODUCT)
        if seed is not None:
            index.cp.seed = seed
        return index, {"nlist": n_list, "m": m, "nbits": nbits}
    raise ValueError(f"unknown index kind '{kind}' (expected one of {', '.join(KINDS)})")


def training_rows(n: int, want: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of a seeded sample of ``want`` of ``n`` rows (all rows when ``want >= n``)."""
    if want >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=want, replace=False))


def fill(index: Any, blocks: Iterable[np.ndarray], train_sample: np.ndarray | None = None) -> Any:
    """Train ``index`` on ``train_sample`` when it needs training, then add ``blocks`` (float32 rows) in order."""
    if not index.is_trained:
        if train_sample is None:
            raise ValueError(f"{type(index).__name__} needs a training sample")
        index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
    for block in blocks:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def blocks_of(vectors: np.ndarray, rows: int = 262144) -> Iterator[np.ndarray]:
    """``vectors`` (in RAM or memory-mapped) ``rows`` at a time, as float32."""
    for start in range(0, vectors.shape[0], rows):
        yield np.ascontiguousarray(vectors[start:start + rows], dtype=np.float32)


def build(kind: str, vectors: np.ndarray, *, train_rows: int | None = None, seed: int = 0, add_rows: int = 262144,
          **options: Any) -> tuple[Any, dict[str, Any]]:
    """:func:`new_index` + :func:`fill` over an in-memory (or memory-mapped) array; IVF kinds train on a seeded
    sample of ``train_rows`` rows (default: 64 per list)."""
    index, params = new_index(kind, vectors.shape[1], vectors.shape[0], seed=seed, **options)
    sample = None
    if kind in ("ivf", "ivfpq"):
        sample = vectors[training_rows(vectors.shape[0], train_rows or params["nlist"] * 64, seed)]
    return fill(index, blocks_of(vectors, add_rows), sample), params


@contextmanager
def search_threads(n: int) -> Iterator[None]:
    """Run FAISS (OpenMP) and torch (intra-op) with ``n`` threads inside the block: single-query latency is timed
    on one thread, whichever library searches."""
    import torch

    faiss = faiss_module()
    before, before_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
        torch.set_num_threads(before_torch)


def index_bytes(index: Any) -> int:
    """Bytes of the serialized index."""
    faiss = faiss_module()
    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).size)
    return int(faiss.serialize_index(index).size)
