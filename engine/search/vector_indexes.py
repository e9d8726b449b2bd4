"""FAISS indexes the evaluation measures beside exact float search: HNSW, int8 scalar-quantized, binary.

Quality of the float (``none``) variant comes from :func:`embedforge.search.index.search` (exact). The quantized
variants search their own index, as a deployment would:

- ``int8``: ``IndexScalarQuantizer(QT_8bit)``, inner product, per-dimension ranges trained on the corpus;
  queries stay float.
- ``binary``: sign bits packed 8 per byte, ``IndexBinaryFlat`` Hamming distance, queries binarized too (plain,
  no rescoring).
- ``binary_rescore``: the ``binary`` index fetches ``rescore_multiplier × k`` candidates by Hamming distance,
  then the float query is scored against the candidates' ±1 bit vectors (the index stays binary in memory;
  the sentence-transformers quantization recipe).

``index_bytes`` is the size of the serialized FAISS index (vectors plus FAISS's own header/graph).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from embedforge import device as dev
from embedforge.search.index import search as exact_search

Quantization = Literal["none", "int8", "binary", "binary_rescore"]
QUANTIZATIONS: tuple[str, ...] = ("none", "int8", "binary", "binary_rescore")


def _faiss() -> Any:
    return dev.optional_import("faiss", "quantized and HNSW evaluation indexes")


def flat_index(corpus: np.ndarray) -> Any:
    """Exact inner-product ``IndexFlatIP`` (the index :func:`embedforge.search.index.search` uses)."""
    index = _faiss().IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    return index


def hnsw_index(corpus: np.ndarray, m: int = 32, ef_construction: int = 200, ef_search: int = 128) -> Any:
    """Approximate inner-product ``IndexHNSWFlat``."""
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(corpus.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    return index


def int8_index(corpus: np.ndarray) -> Any:
    """``IndexScalarQuantizer`` with 8-bit codes, inner product."""
    faiss = _faiss()
    index = faiss.IndexScalarQuantizer(corpus.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    data = np.ascontiguousarray(corpus, dtype=np.float32)
    index.train(data)
    index.add(data)
    return index


def binarize(vectors: np.ndarray) -> np.ndarray:
    """Sign bits (component > 0) packed 8 per byte: ``uint8 (n, ceil(d/8))``."""
    return np.packbits(vectors > 0, axis=1)


def binary_index(corpus: np.ndarray) -> Any:
    """``IndexBinaryFlat`` over the sign bits (the dimension is padded to a multiple of 8)."""
    codes = binarize(corpus)
    index = _faiss().IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return index


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads inside the block (single-query latency is timed on one thread)."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def index_bytes(index: Any) -> int:
    """Bytes of the serialized index."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).size)
    return int(faiss.serialize_index(index).size)


class QuantizedSearcher:
    """One corpus at one dimension under one quantization: build once, search many query sets.

    >>> s = QuantizedSearcher(corpus_vectors, "int8")
    >>> scores, ids = s.search(query_vectors, k=100)
    """

    def __init__(self, corpus: np.ndarray, quantization: str, rescore_multiplier: int = 4) -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization '{quantization}' (known: {', '.join(QUANTIZATIONS)})")
        self.quantization = quantization
        self.corpus = np.ascontiguousarray(corpus, dtype=np.float32)
        self.rescore_multiplier = rescore_multiplier
        if quantization == "none":
            self.index = flat_index(self.corpus)
        elif quantization == "int8":
            self.index = int8_index(self.corpus)
        else:
            self.index = binary_index(self.corpus)
            self._codes = binarize(self.corpus)

    @property
    def bytes(self) -> int:
        return index_bytes(self.index)

    def search(self, queries: np.ndarray, k: int, prebuilt: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: ``(scores (q, k'), ids int64 (q, k'))``; higher score is better.

        Float search goes through the one search API (:func:`embedforge.search.index.search`), which builds its
        index per call; ``prebuilt=True`` searches this object's flat index instead (for latency timing).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.corpus.shape[0])
        if self.quantization == "none" and not prebuilt:
            return exact_search(queries, self.corpus, k)
        if self.quantization == "none":
            scores, ids = self.index.search(queries, k)
            return scores, ids.astype(np.int64)
        if self.quantization == "int8":
            scores, ids = self.index.search(queries, k)
            return scores.astype(np.float32), ids.astype(np.int64)
        if self.quantization == "binary":
            dist, ids = self.index.search(binarize(queries), k)
            return (-dist).astype(np.float32), ids.astype(np.int64)
        return self._rescore(queries, k)

    def _rescore(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_cand = min(k * self.rescore_multiplier, self.corpus.shape[0])
        _, cand = self.index.search(binarize(queries), n_cand)
        cand = cand.astype(np.int64)
        bits = np.unpackbits(self._codes[cand], axis=2)[:, :, : queries.shape[1]].astype(np.float32)
        scores = np.einsum("qd,qcd->qc", queries, bits * 2.0 - 1.0)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1).astype(np.float32), np.take_along_axis(cand, order, 1)
