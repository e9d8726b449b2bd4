"""The one search API: exact top-k inner-product search over normalized vectors, FAISS or torch.

Every stage that searches (mine, evaluate, search, the round-trip filter) calls :func:`search`. Backends give
identical results on identical input (ties broken by lower corpus index):

- ``faiss``: faiss-cpu flat inner-product index (faiss-gpu when CUDA is present);
- ``torch``: exact matmul + top-k in query blocks (never materializes more than ``block × corpus`` scores);
- ``auto``: faiss when importable, else torch.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from engine import device as dev

Backend = Literal["auto", "faiss", "torch"]


def search(queries: np.ndarray, corpus: np.ndarray, k: int, backend: Backend = "auto",
           block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows per query by inner product: ``(scores float32 (q, k'), ids int64 (q, k'))``, k' = min(k, n)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    if queries.ndim != 2 or corpus.ndim != 2:
        raise ValueError(f"expected 2-d arrays, got queries {queries.shape} and corpus {corpus.shape}")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, corpus has {corpus.shape[1]}")
    if corpus.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")
    k = min(k, corpus.shape[0])
    if backend == "auto":
        backend = "faiss" if dev.has_module("faiss") else "torch"
    if backend == "faiss":
        return _faiss_flat(queries, corpus, k)
    return _torch_exact(queries, corpus, k, block)


def _faiss_flat(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = dev.optional_import("faiss", "FAISS search")
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    scores, ids = index.search(queries, k)
    return scores.astype(np.float32), ids.astype(np.int64)


def _torch_exact(queries: np.ndarray, corpus: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    c = torch.from_numpy(corpus)
    all_scores, all_ids = [], []
    for start in range(0, queries.shape[0], block):
        q = torch.from_numpy(queries[start:start + block])
        scores = q @ c.T
        top_s, top_i = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        all_scores.append(top_s.numpy())
        all_ids.append(top_i.numpy().astype(np.int64))
    return np.concatenate(all_scores), np.concatenate(all_ids)
